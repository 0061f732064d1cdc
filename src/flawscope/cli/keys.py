"""``flawscope keys list|create|export|revoke|trust|sign``: the keys that sign bundles and audit heads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flawscope.cli.common import console
from flawscope.errors import InputError

keys_app = typer.Typer(
    help="Signing keys: bundles and audit heads are signed with yours (made on first use).",
    no_args_is_help=True,
)


@keys_app.command("list")
def keys_list_command() -> None:
    """List this machine's keys, the keys it trusts, and which are revoked."""
    from rich.table import Table

    from flawscope.signing import KeyStore

    store = KeyStore()
    keys = store.list_keys()
    if not keys:
        console.print(f"no keys yet in {store.folder}: one is made when you first train, calibrate or export")
        return
    table = Table(title=f"Keys in {store.folder}")
    for column in ("key", "role", "state", "created", "name"):
        table.add_column(column, overflow="fold")
    for key in keys:
        role = "signs here" if key.has_private else "trusted (public key only)"
        state = f"REVOKED {key.revoked_at}: {key.revoke_reason}" if key.revoked_at else "valid"
        table.add_row(key.key_id, role, state, key.created_at or "-", key.name)
    console.print(table)


@keys_app.command("create")
def keys_create_command(
    name: Annotated[str, typer.Option(help="A label for the key (e.g. who or which machine).")] = "",
) -> None:
    """Make a new signing key; it signs from now on (the private key file is readable by you only)."""
    from flawscope.signing import KeyStore

    store = KeyStore()
    key = store.create(name)
    console.print(f"created key {key.key_id} in {store.folder}")


@keys_app.command("export")
def keys_export_command(
    key: Annotated[str | None, typer.Argument(help="Key id or prefix (default: the key that signs).")] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write (default: print it).")
    ] = None,
) -> None:
    """Export a public key (PEM), for a station's trust store or 'flawscope keys trust'."""
    from flawscope.signing import KeyStore, public_pem

    store = KeyStore()
    info = store.find(key) if key else store.signing_key()[0]
    pem = public_pem(info.public)
    if output is None:
        console.print(pem.decode().strip(), soft_wrap=True, highlight=False)
        return
    try:
        output.write_bytes(pem)
    except OSError as exc:
        raise InputError(output, f"cannot write the public key ({exc.strerror or exc})") from None
    console.print(f"public key {info.key_id} written to {output}")


@keys_app.command("revoke")
def keys_revoke_command(
    key: Annotated[str, typer.Argument(help="Key id (or a prefix of one of this machine's keys).")],
    reason: Annotated[str, typer.Option(help="Why (kept with the revocation).")],
) -> None:
    """Revoke a key on this machine: nothing it signed is trusted here any more."""
    from flawscope.signing import KeyStore

    info = KeyStore().revoke(key, reason)
    console.print(f"revoked key {info.key_id}: bundles and heads it signed are refused on this machine")


@keys_app.command("trust")
def keys_trust_command(
    public_key: Annotated[Path, typer.Argument(help="Public key file from 'flawscope keys export'.")],
) -> None:
    """Trust another machine's public key here (bundles it signs load without --trusted-keys)."""
    from flawscope.signing import KeyStore

    info = KeyStore().trust(public_key)
    console.print(f"trusting key {info.key_id} on this machine")


@keys_app.command("sign")
def keys_sign_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder whose content you vouch for.")],
) -> None:
    """Sign a bundle that is intact but unsigned (or signed by another key) with your key.

    Only for a bundle you trust: the signature says that you vouch for its model and thresholds.
    """
    from flawscope.bundle import resign_bundle

    signed = resign_bundle(bundle)
    assert signed.manifest.signature is not None
    console.print(f"{signed.path}: signed by key {signed.manifest.signature.key_id}")
