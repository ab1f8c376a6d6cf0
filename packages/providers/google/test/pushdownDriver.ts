/**
 * A pushed-down job's lifecycle driven directly, as the core's pushdown runner
 * drives it: stage, find or submit (tagged by batch id), poll to the end,
 * tally, land, then retry the failed keys as a smaller job up to
 * `maxAttempts`, and collect the last job's failures for the dead letter.
 * Tests and the scale measurement use it while the runner is not there.
 */
import * as Provider from "@offpeak/core/Provider"
import type * as Source from "@offpeak/core/Source"
import { Effect, Option, Stream } from "effect"

/** one job of a drive */
export interface JobReport {
  readonly batchId: string
  readonly rows: number
  readonly remote: string
  /** found after a crash rather than created */
  readonly found: boolean
  readonly status: Provider.Status
  readonly tally: Source.Tally
  readonly landed: number
}

/** drives `pushdown` through `provider` until every key landed or failed `maxAttempts` times */
export const drive = (
  provider: Provider.Service,
  pushdown: Source.Pushdown,
  options: { readonly runId: string; readonly maxAttempts: number; readonly onJob?: (job: JobReport) => void }
) =>
  Effect.gen(function*() {
    const jobs: Array<JobReport> = []
    let deadLetter: ReadonlyArray<Source.TableFailure> = []
    let staged = yield* pushdown.stage({ runId: options.runId, batchId: `${options.runId}-1` })
    for (let attempt = 1; staged.rows > 0; attempt++) {
      const batchId = `${options.runId}-${attempt}`
      const submission: Provider.Table = { _tag: "Table", batchId, runId: options.runId, sealedAt: Date.now(), ...staged }
      const existing = yield* provider.find(submission)
      const remote = Option.isSome(existing) ? existing.value : yield* provider.submit(submission)
      const status = yield* provider.status(remote).pipe(
        Effect.repeat({ schedule: provider.pollSchedule, until: (s) => Provider.isTerminal(s.state) })
      )
      const tally = yield* pushdown.tally(staged)
      const landed = yield* pushdown.land(staged, { runId: options.runId, batchId })
      const job: JobReport = { batchId, rows: staged.rows, remote: remote.id, found: Option.isSome(existing), status, tally, landed }
      jobs.push(job)
      options.onJob?.(job)
      if (tally.failed === 0) break
      if (attempt >= options.maxAttempts) {
        deadLetter = [...yield* Stream.runCollect(pushdown.failures(staged))]
        break
      }
      staged = yield* pushdown.stage({ runId: options.runId, batchId: `${options.runId}-${attempt + 1}`, retryOf: staged })
    }
    return { jobs, deadLetter, landed: jobs.reduce((n, j) => n + j.landed, 0) }
  })
