"""OpenAPI description of the API key authentication (drf-spectacular)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """`Authorization: Bearer <api key>` (X-API-Key works too)."""

    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        """A bearer scheme whose token is a `whk_` API key."""
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "whk_<random>",
            "description": "A tenant API key; `X-API-Key: <key>` is accepted too.",
        }
