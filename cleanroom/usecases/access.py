"""Who the caller is and what they may do (SPEC section 1).

Authorization comes before existence: a caller who may not see a resource is refused with
the same `PermissionDeniedError` whether or not it exists.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from dataclasses import dataclass

from cleanroom.config import Collaboration, Config, Partner, Role
from cleanroom.errors import PermissionDeniedError, UnauthenticatedError
from cleanroom.names import CollaborationName, DatasetName, partner_name


@dataclass(frozen=True)
class Caller:
    """The identity of a call: its certificate, and the partner it belongs to, if any."""

    subject: str
    certificate_names: tuple[str, ...]
    partner: Partner | None

    @property
    def label(self) -> str:
        """How the query log names the caller: `partners/{id}`, else the certificate subject."""
        return partner_name(self.partner.id) if self.partner else self.subject or "anonymous"

    def known_partner(self) -> Partner:
        """The caller's partner, or UnauthenticatedError if the certificate names none."""
        if self.partner is None:
            raise UnauthenticatedError(
                "UNKNOWN_CERTIFICATE",
                f"No partner is configured for the client certificate {self.subject!r}"
                f" (names: {', '.join(self.certificate_names) or 'none'}). Ask the operator"
                " to add one of its names to a partner's certificate_names.",
                subject=self.subject,
            )
        return self.partner


# The configuration a call started with, so that all it reads is of one snapshot.
_PINNED: contextvars.ContextVar[tuple[AccessPolicy, Config] | None] = contextvars.ContextVar(
    "pinned_config", default=None
)


class AccessPolicy:
    """Checks callers against the configured partners, collaborations and roles.

    The configuration is an immutable snapshot, replaced whole on reload. A call pins the
    snapshot it starts with (`pin`), so everything it checks comes from one snapshot even
    if a reload lands while it runs.
    """

    def __init__(self, config: Config) -> None:
        self._config = config

    @property
    def config(self) -> Config:
        """The snapshot pinned by the call under way on this thread, else the latest."""
        pinned = _PINNED.get()
        return pinned[1] if pinned is not None and pinned[0] is self else self._config

    @config.setter
    def config(self, config: Config) -> None:
        self._config = config  # one reference replaced: atomic for the threads reading it

    def pin(self) -> contextvars.Token[tuple[AccessPolicy, Config] | None]:
        """Pins the latest snapshot for the call under way; `unpin` with the token."""
        return _PINNED.set((self, self._config))

    @staticmethod
    def unpin(token: contextvars.Token[tuple[AccessPolicy, Config] | None]) -> None:
        """Ends what `pin` began."""
        _PINNED.reset(token)

    def identify(self, subject: str, certificate_names: tuple[str, ...]) -> Caller:
        """The caller that a verified client certificate stands for."""
        return Caller(subject, certificate_names, self.config.partner_for(certificate_names))

    def collaboration(self, name: CollaborationName) -> Collaboration | None:
        """The configured collaboration of that name, if any."""
        return self.config.collaborations.get(name.collaboration)

    def roles(self, caller: Caller, name: CollaborationName) -> frozenset[Role]:
        """The caller's roles in a collaboration; none if either is unknown."""
        collaboration = self.collaboration(name)
        if caller.partner is None or collaboration is None:
            return frozenset()
        return collaboration.roles_of(caller.partner)

    def require(
        self, caller: Caller, name: CollaborationName, roles: Iterable[Role], action: str
    ) -> Collaboration:
        """The collaboration, if the caller has one of `roles` there.

        Raises:
            UnauthenticatedError: The certificate belongs to no partner.
            PermissionDeniedError: The caller has none of the roles, or the collaboration
                does not exist (the two are not told apart).
        """
        partner = caller.known_partner()
        wanted = frozenset(roles)
        collaboration = self.collaboration(name)
        held = collaboration.roles_of(partner) if collaboration else frozenset()
        if collaboration is None or not held:
            raise PermissionDeniedError(
                "NOT_A_MEMBER",
                f"Partner {partner.id!r} is not a member of {name} (or it does not exist),"
                f" so it may not {action}.",
                partner=partner.id,
                collaboration=str(name),
            )
        if not held & wanted:
            needed = " or ".join(sorted(wanted))
            raise PermissionDeniedError(
                "ROLE_REQUIRED",
                f"Partner {partner.id!r} may not {action} in {name}: that needs the {needed}"
                f" role, and it holds {', '.join(sorted(held))}.",
                partner=partner.id,
                collaboration=str(name),
                required_role=needed,
            )
        return collaboration

    @staticmethod
    def require_owner(
        caller: Caller, collaboration: Collaboration, name: DatasetName, owner: str | None
    ) -> None:
        """Lets the dataset's owner and administrators through; `owner` is None if it is absent.

        Raises:
            PermissionDeniedError: The caller is not the owner, whether or not it exists.
        """
        partner = caller.known_partner()
        if owner == partner.id or Role.ADMIN in collaboration.roles_of(partner):
            return
        raise PermissionDeniedError(
            "DATASET_NOT_ACCESSIBLE",
            f"Partner {partner.id!r} cannot use {name}: it does not exist, was deleted, or"
            " belongs to another partner. Check the name with `cleanroom-partner datasets list`.",
            partner=partner.id,
            dataset=str(name),
        )
