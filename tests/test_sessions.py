"""Session tokens: minted for a caller who logged in with a longer-lived credential."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from execflow.clock import ManualClock
from execflow.errors import Conflict, NotAuthenticated
from execflow.store import Store
from execflow.store.credentials import ACCESS_KEY
from tests.harness import harness


async def test_a_session_has_the_callers_project_and_role_and_expires(store: Store) -> None:
    clock = ManualClock()
    async with harness(store, clock) as h:
        secret = await h.service.open_session(h.admin, 3600, "explorer session")
        who = await h.service.authenticate(secret)
        assert (who.project_id, who.role) == (h.admin.project_id, h.admin.role)
        assert who.token_id != h.admin.token_id
        listed = {t.id: t for t in store.list_tokens(h.admin.project_id)}
        assert listed[who.token_id].created_by == h.admin.token_id
        assert listed[who.token_id].description == "explorer session"
        clock.advance(3601)
        with pytest.raises(NotAuthenticated):
            await h.service.authenticate(secret)


async def test_a_session_lasts_a_bounded_time(store: Store) -> None:
    async with harness(store) as h:
        for ttl in (0.0, -1.0, 8 * 86400.0):
            with pytest.raises(ValueError):
                await h.service.open_session(h.admin, ttl)


async def test_revoking_a_key_ends_the_sessions_opened_with_it(store: Store) -> None:
    async with harness(store) as h:
        now = h.clock.now()
        key_id, secret = store.create_token(h.admin.project_id, "operator", now, kind=ACCESS_KEY)
        keyed = await h.service.authenticate_key(key_id, secret)
        session = await h.service.open_session(keyed, 3600)
        other = await h.service.open_session(h.admin, 3600)
        assert (await h.service.authenticate(session)).role == "operator"
        store.revoke_token(h.admin.project_id, key_id, now, None, kind=ACCESS_KEY)
        with pytest.raises(NotAuthenticated):
            await h.service.authenticate(session)
        with pytest.raises(NotAuthenticated):
            await h.service.authenticate_key(key_id, secret)
        assert (await h.service.authenticate(other)).role == "admin"  # not made with the key


async def test_a_session_expires_no_later_than_the_key_that_opened_it(store: Store) -> None:
    async with harness(store) as h:
        now = h.clock.now()
        soon = now + timedelta(hours=1)
        key_id, secret = store.create_token(
            h.admin.project_id, "viewer", now, expires_at=soon, kind=ACCESS_KEY
        )
        keyed = await h.service.authenticate_key(key_id, secret)
        session = await h.service.open_session(keyed, 3 * 86400)
        made = {t.id: t for t in store.list_tokens(h.admin.project_id)}
        (token,) = [t for t in made.values() if t.created_by == key_id]
        assert token.expires_at == soon
        assert (await h.service.authenticate(session)).role == "viewer"


async def test_logging_in_again_hands_the_live_session_again(store: Store) -> None:
    """Two hundred logins with one key make one session, not two hundred tokens; a new one
    is made once the session has less than half its time left."""
    clock = ManualClock()
    async with harness(store, clock) as h:
        now = h.clock.now()
        key_id, secret = store.create_token(h.admin.project_id, "viewer", now, kind=ACCESS_KEY)
        keyed = await h.service.authenticate_key(key_id, secret)
        sessions = {
            await h.service.open_session(keyed, 3600, "explorer session") for _ in range(200)
        }
        assert len(sessions) == 1
        made = [t for t in store.list_tokens(h.admin.project_id) if t.created_by == key_id]
        assert len(made) == 1
        # another kind of session is another session
        other = await h.service.open_session(keyed, 3600, "console session")
        assert other not in sessions
        clock.advance(1801)
        fresh = await h.service.open_session(keyed, 3600, "explorer session")
        assert fresh not in sessions
        assert (await h.service.authenticate(fresh)).role == "viewer"
        # a session's secret is kept sealed, never in plaintext
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT sealed_secret FROM tokens")).scalars().all()
        assert not any(fresh in (row or "") for row in rows)


async def test_tokens_made_with_a_keys_session_die_with_the_key(store: Store) -> None:
    async with harness(store) as h:
        now = h.clock.now()
        key_id, secret = store.create_token(h.admin.project_id, "admin", now, kind=ACCESS_KEY)
        keyed = await h.service.authenticate_key(key_id, secret)
        session = await h.service.open_session(keyed, 3600)
        by_session = await h.service.authenticate(session)
        # with the session, an admin makes a long-lived token, and with it another
        made_id, made = store.create_token(
            h.admin.project_id, "operator", now, created_by=by_session.token_id
        )
        _, grandchild = store.create_token(h.admin.project_id, "viewer", now, created_by=made_id)
        unrelated = await h.service.open_session(h.admin, 3600)
        store.revoke_token(h.admin.project_id, key_id, now, None, kind=ACCESS_KEY)
        for gone in (session, made, grandchild):
            with pytest.raises(NotAuthenticated):
                await h.service.authenticate(gone)
        assert (await h.service.authenticate(unrelated)).role == "admin"


async def test_a_session_never_counts_as_the_last_admin_token_of_default(store: Store) -> None:
    async with harness(store) as h:
        now = h.clock.now()
        project = h.admin.project_id
        console = await h.service.open_session(h.admin, 3600, "console session", own=True)
        await h.service.open_session(h.admin, 3600, "explorer session")
        sessions = {t.id for t in store.list_tokens(project) if t.created_by is not None}
        assert len(sessions) == 2
        # two live admin tokens besides it, both sessions of it: it stays the last one
        with pytest.raises(Conflict, match="last live admin token"):
            store.revoke_token(project, h.admin.token_id, now, project)
        assert (await h.service.authenticate_session(console)).role == "admin"
        # a token an admin made (not a session) counts, though it has a maker too
        made_id, _ = store.create_token(project, "admin", now, created_by=h.admin.token_id)
        store.revoke_token(project, h.admin.token_id, now, project)
        with pytest.raises(NotAuthenticated):
            await h.service.authenticate_session(console)
        with pytest.raises(Conflict, match="last live admin token"):
            store.revoke_token(project, made_id, now, project)
