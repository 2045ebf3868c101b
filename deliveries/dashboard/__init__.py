"""The operations dashboard: live delivery figures for staff, no build step."""
