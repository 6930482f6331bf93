"""The connection form (settings plus one write-only input per credential field) and the circuit reset form.

Credentials are write-only: every credential input is empty on every render, even after a
failed submit, and what is stored is replaced only by what is filled in.
"""

from __future__ import annotations

from typing import Any

from django import forms

from budgetradar.admin_base import AuditedForm
from platforms.credentials import CREDENTIAL_FIELDS, credential_input
from platforms.models import Platform, PlatformConnection


class WriteOnlyInput(forms.PasswordInput):
    """A secret input that never renders a value, not even the one just submitted."""

    def __init__(self) -> None:
        super().__init__(render_value=False, attrs={"autocomplete": "off", "spellcheck": "false", "size": 60})


class CircuitResetForm(forms.Form):
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="What was fixed, or why live work may resume. Recorded in the connection's history.",
    )


class _ConnectionFormBase(AuditedForm):
    """Connection settings plus one write-only input per credential field, by name.

    Each platform's fields come from ``CREDENTIAL_FIELDS``; the help text says which are
    required. Filled-in fields replace the stored ones of that name, empty ones keep
    them; after that every required field of the platform must be stored. Values are
    stored encrypted and never shown again (not even after a failed submit).
    """

    class Meta:
        model = PlatformConnection
        fields = "__all__"

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        platform = cleaned.get("platform") or (self.instance.platform if self.instance.pk else None)
        if not platform:
            return cleaned
        given = {
            spec.name: cleaned[credential_input(p, spec.name)]
            for p, specs in CREDENTIAL_FIELDS.items()
            for spec in specs
            if cleaned.get(credential_input(p, spec.name)) and p == platform
        }
        for other, specs in CREDENTIAL_FIELDS.items():
            for spec in specs:
                if other != platform and cleaned.get(credential_input(other, spec.name)):
                    self.add_error(
                        credential_input(other, spec.name),
                        f"This is a {Platform(other).label} field; the connection is {Platform(platform).label}. "
                        "Nothing was stored; enter it again in the right field.",
                    )
        stored = dict(self.instance.credentials) if self.instance.pk else {}
        merged = {**stored, **given}
        for spec in CREDENTIAL_FIELDS.get(platform, ()):
            if spec.required and not merged.get(spec.name):
                self.add_error(
                    credential_input(platform, spec.name),
                    f"{spec.label} is required for a {Platform(platform).label} connection.",
                )
        cleaned["new_credentials"] = merged if given else None
        return cleaned


def _credential_inputs() -> dict[str, forms.Field]:
    """One optional write-only field per platform credential, labelled with its platform."""
    inputs: dict[str, forms.Field] = {}
    for platform, specs in CREDENTIAL_FIELDS.items():
        for spec in specs:
            inputs[credential_input(platform, spec.name)] = forms.CharField(
                required=False,
                label=f"{Platform(platform).label}: {spec.label}",
                widget=WriteOnlyInput(),
                help_text=("Required. " if spec.required else "Optional. ") + spec.help,
            )
    return inputs


# Declared on the class (not added in __init__) so the admin's fieldsets may name them.
PlatformConnectionForm = type("PlatformConnectionForm", (_ConnectionFormBase,), _credential_inputs())
