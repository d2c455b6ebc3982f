"""Work spread back between live nodes: a node holding less than its share asks the busiest
for the difference, which gives back the leases of idle executions at its next heartbeat."""

from __future__ import annotations

from datetime import datetime, timedelta

from execflow.engine.base import EngineBase, log


class Spreading(EngineBase):
    """Asking for a share of the work, and handing some over when asked."""

    async def _spread(self, now: datetime) -> None:
        """Holding less than an even share of the live nodes' executions (a node that just
        started, say), ask the busiest node to hand the difference over. It gives back the
        leases of idle executions at its next heartbeat and this node claims them: never two
        owners at once, and nothing that runs is moved."""
        loads = await self.store.read(self.store.loads, now)
        if len(loads) < 2 or self.node_id not in loads:
            return
        share = sum(loads.values()) // len(loads)
        mine = loads[self.node_id]
        busiest = max(loads, key=lambda node: loads[node])
        want = min(share - mine, loads[busiest] - share)
        if want >= max(2, share // 10) and busiest != self.node_id:
            log.info("holding %d of a share of %d: asking %s for %d", mine, share, busiest, want)
            await self.store.call(self.store.ask, busiest, want)
            self._claim_wanted = True

    def _hand_over(self, count: int) -> None:
        """Give back the leases of up to `count` idle executions (nothing in flight, no
        attempt waiting for a worker, no cancel under way), for other nodes to claim."""
        busy = {key[0] for key in self._inflight} | {w.key[0] for w in self._pool}
        idle = [
            run.id
            for run in self.runs.values()
            if run.id not in busy
            and run.id not in self._touched
            and not run.cancel_requested
            and not run.state.terminal
        ][:count]
        for run_id in idle:
            self._drop(run_id)  # its lease is given back at the start of the next tick
        if idle:
            log.info("handing %d executions over to less busy nodes", len(idle))
            quiet = timedelta(seconds=3 * self.settings.poll_seconds)
            self._quiet_until = self.clock.now() + quiet
