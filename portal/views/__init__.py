"""The portal's pages: the session link, endpoints, deliveries."""
