"""Sealed values at rest: which keys they need, and sealing them again with the newest key."""

from __future__ import annotations

import sqlalchemy as sa

from execflow.definition import parse_definition
from execflow.store import schema as s
from execflow.store.base import StoreBase


class SealedValues(StoreBase):
    """Secret inputs, access keys' secrets and callback secrets, sealed in the database."""

    def missing_keys(self) -> list[str]:
        """Fingerprints of the keys that seal values in the database (recorded, not retired)
        that this node's sealer lacks; see `execflow.store.keys`."""
        return self.secret_keys.missing()

    def reseal(self, batch: int = 500) -> int:
        """Seal every sealed value again with the newest key (secret inputs, access keys'
        secrets, callback secrets), and seal what was stored before it was sealed (inputs,
        callback secrets); how many values were sealed."""
        e, r = s.executions, s.revisions
        secret_names: dict[tuple[str, int], list[str]] = {}
        done, after = 0, ""
        while True:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    sa.select(e.c.id, e.c.workflow_id, e.c.revision, e.c.inputs, e.c.sealed_inputs)
                    .where(e.c.id > after)
                    .order_by(e.c.id)
                    .limit(batch)
                ).all()
                for row in rows:
                    names = row.sealed_inputs
                    if names is None:  # stored before sealing: its secret parameters
                        at = (row.workflow_id, row.revision)
                        if at not in secret_names:
                            definition = conn.execute(
                                sa.select(r.c.definition).where(
                                    r.c.workflow_id == at[0], r.c.number == at[1]
                                )
                            ).scalar_one()
                            secret_names[at] = sorted(parse_definition(definition).secret_params)
                        names = [n for n in secret_names[at] if row.inputs.get(n) is not None]
                    if not names:
                        continue
                    inputs = dict(row.inputs)
                    for name in names:
                        if row.sealed_inputs is None:
                            inputs[name] = self.sealer.seal(inputs[name]).token
                        else:
                            inputs[name] = self.sealer.reseal(inputs[name])
                    conn.execute(
                        e.update()
                        .where(e.c.id == row.id)
                        .values(inputs=inputs, sealed_inputs=list(names))
                    )
                    done += len(names)
            if len(rows) < batch:
                break
            after = rows[-1].id
        t = s.tokens
        with self.engine.begin() as conn:
            keys = conn.execute(
                sa.select(t.c.id, t.c.sealed_secret).where(t.c.sealed_secret.is_not(None))
            ).all()
            for key in keys:
                resealed = self.sealer.reseal(key.sealed_secret)
                conn.execute(t.update().where(t.c.id == key.id).values(sealed_secret=resealed))
            p = s.projects
            kept = conn.execute(
                sa.select(p.c.id, p.c.callback_secret).where(p.c.callback_secret.is_not(None))
            ).all()
            for project in kept:
                value = project.callback_secret
                if len(value) == 64:  # made before callback secrets were sealed
                    value = self.sealer.seal(value).token
                else:
                    value = self.sealer.reseal(value)
                conn.execute(p.update().where(p.c.id == project.id).values(callback_secret=value))
        return done + len(keys) + len(kept)
