"""The credential fields each platform needs, by name, for forms and checks.

- Google Ads: an OAuth client (client id and secret), a user's refresh token for it and
  the developer token; access tokens are fetched with the refresh token and expire
  (https://developers.google.com/google-ads/api/docs/oauth/overview). ``login_customer_id``
  is the manager account when access goes through one; ``token_uri`` overrides Google's
  token endpoint (tests; platform staff only in the admin).
- Meta: a (system user) access token; with the app secret every call carries an
  appsecret_proof (https://developers.facebook.com/docs/graph-api/securing-requests).
- Sandbox: the account's access token.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CredentialField:
    name: str
    label: str
    required: bool
    help: str = ""


CREDENTIAL_FIELDS: dict[str, tuple[CredentialField, ...]] = {
    "google_ads": (
        CredentialField(
            "developer_token", "developer token", True, "From the Google Ads API Center of the manager account."
        ),
        CredentialField("client_id", "OAuth client id", True, "The OAuth client of the Google Cloud project."),
        CredentialField("client_secret", "OAuth client secret", True),
        CredentialField("refresh_token", "refresh token", True, "Granted by a user with access to the account."),
        CredentialField(
            "login_customer_id", "login customer id", False, "The manager account, when access goes through one."
        ),
        CredentialField("token_uri", "token endpoint", False, "Leave empty for Google's own."),
    ),
    "meta": (
        CredentialField("access_token", "access token", True, "A system user token with ads_management."),
        CredentialField("app_id", "app id", False),
        CredentialField("app_secret", "app secret", False, "Given, every call carries an appsecret_proof."),
    ),
    "sandbox": (CredentialField("access_token", "access token", True, "The sandbox account's token."),),
}


def credential_input(platform: str, name: str) -> str:
    """The form input name of one platform's credential field."""
    return f"cred_{platform}__{name}"


ALL_CREDENTIAL_INPUTS = tuple(credential_input(p, f.name) for p, fields in CREDENTIAL_FIELDS.items() for f in fields)


def missing_credentials(platform: str, credentials: dict) -> list[str]:
    """Names of the platform's required fields that ``credentials`` lacks."""
    return [f.name for f in CREDENTIAL_FIELDS.get(platform, ()) if f.required and not credentials.get(f.name)]
