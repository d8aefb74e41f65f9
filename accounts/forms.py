"""allauth's forms, worded as the rest of the app."""

from __future__ import annotations

from typing import Any

from allauth.account.forms import SignupForm as AllauthSignupForm


class SignupForm(AllauthSignupForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "password2" in self.fields:
            self.fields["password2"].label = "Password confirmation"
