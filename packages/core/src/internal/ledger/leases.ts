/**
 * Leases: the right to work a pipeline's runs, taken atomically, renewed, released, and who holds it now.
 * The fence each write checks is in `shared.ts`.
 *
 * @internal
 */
import { Clock, Effect, Option } from "effect"
import type { Lease, LeaseHolder, Service } from "../../Ledger.ts"
import * as Holder from "../lease.ts"
import { LedgerError, LeaseHeld } from "./errors.ts"
import { toNumber, sqlMessage, mapError } from "./shared.ts"
import type { Shared } from "./shared.ts"

/** this part of the ledger, on the shared state */
export const make = (shared: Shared) => {
  const { sql, fences, forUpdate, deliverable } = shared

  interface LeaseRow {
    readonly scope: string
    readonly run_id: string
    readonly owner: string | null
    readonly host: string
    readonly pid: number | bigint
    readonly pid_start: string | null
    readonly generation: number | bigint
    readonly acquired_at: number | bigint
    readonly heartbeat_at: number | bigint
    readonly expires_at: number | bigint
  }

  let acquisitions = 0
  const acquireOnce = (options: { readonly scope: string; readonly runId: string; readonly ttlMs: number }) =>
    Effect.gen(function*() {
      const me = Holder.self()
      const now = yield* Clock.currentTimeMillis
      const rows = yield* sql<LeaseRow>`SELECT * FROM offpeak_leases WHERE scope = ${options.scope}${forUpdate}`
      const row = rows[0]
      if (row !== undefined && row.owner !== null) {
        const holder = { host: row.host, pid: toNumber(row.pid), pidStart: row.pid_start }
        const alive = Holder.isAlive(holder)
        if (alive === true || (alive === undefined && toNumber(row.expires_at) > now)) {
          return yield* new LeaseHeld({
            scope: options.scope,
            runId: row.run_id,
            host: row.host,
            pid: holder.pid,
            acquiredAt: toNumber(row.acquired_at),
            heartbeatAt: toNumber(row.heartbeat_at),
            expiresAt: toNumber(row.expires_at),
            sameHost: alive !== undefined
          })
        }
      }
      const lease: Lease = {
        scope: options.scope,
        runId: options.runId,
        // one owner per acquisition: two runs in one process are two owners
        owner: `${me.owner}:${++acquisitions}`,
        host: me.host,
        pid: me.pid,
        generation: toNumber(row?.generation ?? 0) + 1,
        acquiredAt: now,
        expiresAt: now + options.ttlMs,
        ttlMs: options.ttlMs
      }
      const values = {
        run_id: lease.runId,
        owner: lease.owner,
        host: lease.host,
        pid: lease.pid,
        pid_start: me.pidStart,
        generation: lease.generation,
        acquired_at: now,
        heartbeat_at: now,
        expires_at: lease.expiresAt
      }
      if (row === undefined) yield* sql`INSERT INTO offpeak_leases ${sql.insert({ scope: options.scope, ...values })}`
      else yield* sql`UPDATE offpeak_leases SET ${sql.update(values)} WHERE scope = ${options.scope}`
      return lease
    }).pipe(sql.withTransaction)

  const acquire: Service["acquire"] = (options) =>
    acquireOnce(options).pipe(
      // two processes inserting the first lease row of a scope at once: the loser looks again (and finds it held)
      Effect.retry({ times: 3, while: (e) => e._tag !== "LeaseHeld" && /offpeak_leases|unique|constraint/i.test(sqlMessage(e)) }),
      Effect.tap((lease) =>
        Effect.sync(() => {
          fences.set(lease.runId, lease)
          // another process may have worked the run since this one last did: what it knew of rows waiting is stale
          deliverable.clear()
        })
      ),
      Effect.mapError((e) => e._tag === "LeaseHeld" ? e : new LedgerError({ operation: "acquire", message: sqlMessage(e) }))
    )

  const renew: Service["renew"] = (lease) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const rows = yield* sql`UPDATE offpeak_leases SET heartbeat_at = ${now}, expires_at = ${now + lease.ttlMs}
        WHERE scope = ${lease.scope} AND owner = ${lease.owner} AND generation = ${lease.generation}
        RETURNING generation`.values
      if (rows.length === 0) {
        fences.delete(lease.runId)
        const held = yield* sql<LeaseRow>`SELECT * FROM offpeak_leases WHERE scope = ${lease.scope}`
        const by = held[0]?.owner ? `process ${toNumber(held[0].pid)} on ${held[0].host} holds it now` : "it was released"
        return yield* new LedgerError({ operation: "lease", message: `lost the lease of pipeline "${lease.scope}": ${by}` })
      }
      return { ...lease, expiresAt: now + lease.ttlMs }
    }).pipe(mapError("renew"))

  const release: Service["release"] = (lease) =>
    sql`UPDATE offpeak_leases SET owner = NULL, expires_at = 0
      WHERE scope = ${lease.scope} AND owner = ${lease.owner} AND generation = ${lease.generation}`.pipe(
      Effect.ensuring(Effect.sync(() => {
        if (fences.get(lease.runId)?.owner === lease.owner) fences.delete(lease.runId)
      })),
      Effect.asVoid,
      mapError("release")
    )

  const holder: Service["holder"] = (scope) =>
    sql<LeaseRow>`SELECT * FROM offpeak_leases WHERE scope = ${scope}`.pipe(
      Effect.map((rows) => {
        const row = rows[0]
        if (row === undefined || row.owner === null) return Option.none<LeaseHolder>()
        const pid = toNumber(row.pid)
        return Option.some({
          scope,
          runId: row.run_id,
          host: row.host,
          pid,
          acquiredAt: toNumber(row.acquired_at),
          heartbeatAt: toNumber(row.heartbeat_at),
          expiresAt: toNumber(row.expires_at),
          alive: Holder.isAlive({ host: row.host, pid, pidStart: row.pid_start })
        })
      }),
      mapError("holder")
    )

  return { acquire, renew, release, holder }
}
