/**
 * A scriptable in-memory provider for the runner's tests: it reads the batch
 * files the runner writes, answers each line with `answer`, shuffles the
 * results, and records every create. The emulator-backed tests in `test/`
 * exercise the real adapter; this one isolates the runner's logic.
 */
import { Duration, Effect, Option, Result, Schedule, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as Provider from "../../src/Provider.ts"
import * as ProviderError from "../../src/ProviderError.ts"
import type * as Request from "../../src/Request.ts"

export interface Line {
  readonly custom_id: string
  readonly request: Request.Request
}

export interface Script {
  /** answer to one line; `undefined` drops the line (the provider "forgets" it) */
  readonly answer: (line: Line, attempt: number) => Provider.LineResult | undefined
  /** polls before a batch completes (default 1) */
  readonly pollsToComplete?: number
  /** make a batch fail validation: issues by 1-based line */
  readonly validate?: (lines: ReadonlyArray<Line>) => ReadonlyArray<Provider.Issue>
  readonly limits?: Partial<Provider.Limits>
  /** refuse a create before it happens (e.g. 413 for a batch too large) */
  readonly rejectSubmit?: (lines: ReadonlyArray<Line>) => ProviderError.ProviderError["reason"] | undefined
  /** the n-th create (1-based) goes through, then the call fails with a 500 */
  readonly failAfterCreate?: (n: number) => boolean
  /** the first N status calls of each batch answer 404 (propagation delay) */
  readonly notFoundPolls?: number
  /** the first N status calls of each batch answer 429 with this retry-after (a rate-limit storm) */
  readonly rateLimitedPolls?: { readonly times: number; readonly retryAfterMs: number }
  /** how long a synchronous call takes (default: no time) */
  readonly syncDelay?: Duration.Input
  /** the provider creates over uploaded files (`Provider.upload`), each upload taking this long */
  readonly uploadDelay?: Duration.Input
  /** how long a create takes (default: no time) */
  readonly createDelay?: Duration.Input
}

interface RemoteState {
  readonly id: string
  readonly batchId: string
  readonly lines: ReadonlyArray<Line>
  polls: number
  limited: number
  cancelled: boolean
}

export const make = (script: Script) => {
  const instance = Math.random().toString(36).slice(2, 8)
  const batches = new Map<string, RemoteState>()
  const attempts = new Map<string, number>()
  const creates: Array<{ readonly batchId: string; readonly lines: number }> = []
  /** the custom id of every synchronous call, in order */
  const syncCalls: Array<string> = []
  let concurrent = 0
  let maxConcurrent = 0
  const ended = new Set<string>()
  /** files uploaded by `upload` (id → batch id), and the most uploads and creates seen in progress at once */
  const files = new Map<string, string>()
  const busy = { uploads: 0, maxUploads: 0, creates: 0, maxCreates: 0 }
  /** the file each create went over (undefined: the create uploaded its own) */
  const createdOver: Array<string | undefined> = []
  const during = <A, E>(key: "uploads" | "creates", delay: Duration.Input | undefined, effect: Effect.Effect<A, E>) =>
    Effect.suspend(() => {
      busy[key]++
      if (key === "uploads") busy.maxUploads = Math.max(busy.maxUploads, busy.uploads)
      else busy.maxCreates = Math.max(busy.maxCreates, busy.creates)
      return Effect.sleep(delay ?? 0).pipe(Effect.andThen(effect), Effect.ensuring(Effect.sync(() => void busy[key]--)))
    })

  const service: Provider.Service = {
    name: "test",
    limits: { maxRequests: 1_000, maxBytes: 10_000_000, maxRequestBytes: 10_000_000, maxInFlight: 2, ...script.limits },
    encode: (request, customId) => {
      const line = JSON.stringify({ custom_id: customId, request: { ...request, output: request._tag === "Chat" && request.output ? { name: request.output.name } : undefined } })
      return Result.succeed({ line, bytes: Provider.lineBytes(line), group: request.model })
    },
    ...(script.uploadDelay === undefined ? {} : {
      upload: (submission: Provider.Lines) =>
        during("uploads", script.uploadDelay, Effect.sync(() => {
          const id = `file-${instance}-${files.size + 1}`
          files.set(id, submission.batchId)
          return id
        }))
    }),
    submit: (submission) =>
      during("creates", script.createDelay, Effect.sync(() => {
        if (submission._tag !== "Lines") throw new Error("lines only")
        if (submission.uploaded !== undefined && files.get(submission.uploaded) !== submission.batchId) {
          throw new Error(`create of ${submission.batchId} over ${submission.uploaded}, a file of another batch`)
        }
        createdOver.push(submission.uploaded)
        const lines = fs.readFileSync(submission.path, "utf8").split("\n").filter((l) => l.length > 0).map((l) =>
          JSON.parse(l) as Line
        )
        const refused = script.rejectSubmit?.(lines)
        if (refused !== undefined) return { refused }
        // unique across instances, as a real provider's ids are (a resumed run meets a new instance)
        const id = `remote-${instance}-${batches.size + 1}`
        batches.set(id, { id, batchId: submission.batchId, lines, polls: 0, limited: 0, cancelled: false })
        creates.push({ batchId: submission.batchId, lines: lines.length })
        concurrent++
        maxConcurrent = Math.max(maxConcurrent, concurrent)
        return { id, failed: script.failAfterCreate?.(creates.length) ?? false }
      })).pipe(Effect.flatMap((r) =>
        "refused" in r
          ? Effect.fail(new ProviderError.ProviderError({ provider: "test", operation: "submit", reason: r.refused! }))
          : r.failed
          ? Effect.fail(new ProviderError.ProviderError({
            provider: "test",
            operation: "submit",
            reason: new ProviderError.ServerError({ message: "created, then the connection broke", status: 500 })
          }))
          : Effect.succeed({ id: r.id })
      )),
    find: (submission) =>
      Effect.sync(() => {
        for (const b of batches.values()) if (b.batchId === submission.batchId) return Option.some({ id: b.id })
        return Option.none()
      }),
    status: (remote) =>
      Effect.gen(function*() {
        const b = batches.get(remote.id)
        if (b === undefined) {
          return yield* new ProviderError.ProviderError({
            provider: "test",
            operation: "status",
            reason: new ProviderError.NotFound({ message: remote.id })
          })
        }
        if (script.rateLimitedPolls !== undefined && b.limited < script.rateLimitedPolls.times) {
          b.limited++
          return yield* new ProviderError.ProviderError({
            provider: "test",
            operation: "status",
            reason: new ProviderError.RateLimited({ message: "slow down", retryAfterMs: script.rateLimitedPolls.retryAfterMs })
          })
        }
        b.polls++
        if (b.polls <= (script.notFoundPolls ?? 0)) {
          return yield* new ProviderError.ProviderError({
            provider: "test",
            operation: "status",
            reason: new ProviderError.NotFound({ message: `no batch ${remote.id} (yet)` })
          })
        }
        const polled = b.polls - (script.notFoundPolls ?? 0)
        const issues = script.validate?.(b.lines) ?? []
        const done = polled >= (script.pollsToComplete ?? 1)
        const state: Provider.State = b.cancelled
          ? "cancelled"
          : !done
          ? "running"
          : issues.length > 0
          ? "failed"
          : "completed"
        if (Provider.isTerminal(state) && !ended.has(b.id)) {
          ended.add(b.id)
          concurrent--
        }
        return {
          state,
          providerState: state,
          counts: { total: b.lines.length, completed: done ? b.lines.length : 0, failed: 0 },
          issues
        }
      }),
    results: (remote) =>
      Stream.suspend(() => {
        const b = batches.get(remote.id)!
        const out: Array<Provider.LineResult> = []
        // a cancelled batch answered its first half before it stopped
        for (const line of b.cancelled ? b.lines.slice(0, Math.ceil(b.lines.length / 2)) : b.lines) {
          const n = (attempts.get(line.custom_id) ?? 0) + 1
          attempts.set(line.custom_id, n)
          const answer = script.answer(line, n)
          if (answer !== undefined) out.push(answer)
        }
        // any order: reverse and interleave
        const shuffled = [...out.filter((_, i) => i % 2 === 1).reverse(), ...out.filter((_, i) => i % 2 === 0)]
        return Stream.fromIterable(shuffled)
      }),
    cancel: (remote) => Effect.sync(() => void (batches.get(remote.id)!.cancelled = true)),
    decodeOutput: (output, text) => {
      try {
        const value = Schema.decodeUnknownSync(output.schema)(JSON.parse(text))
        return Result.succeed(value)
      } catch (e) {
        return Result.fail(String(e))
      }
    },
    pollSchedule: Schedule.spaced("1 millis"),
    sync: (text) =>
      Effect.sleep(script.syncDelay ?? 0).pipe(Effect.map(() => {
        const line = JSON.parse(text) as Line
        syncCalls.push(line.custom_id)
        const n = (attempts.get(line.custom_id) ?? 0) + 1
        attempts.set(line.custom_id, n)
        return script.answer(line, n) ?? failed(line, true, "no answer")
      }))
  }
  return {
    service,
    creates,
    syncCalls,
    batches,
    busy,
    createdOver,
    get maxConcurrent() {
      return maxConcurrent
    }
  }
}

/** a chat answer for a line */
export const ok = (line: Line, text: string): Provider.LineResult => ({
  _tag: "LineSucceeded",
  id: line.custom_id,
  response: { _tag: "ChatResponse", text, finishReason: "stop", usage: { inputTokens: 10, outputTokens: 2 } }
})

export const failed = (line: Line, retryable: boolean, message = retryable ? "HTTP 500" : "HTTP 400"): Provider.LineResult => ({
  _tag: "LineFailed",
  id: line.custom_id,
  kind: "provider_error",
  retryable,
  message
})

/** the user message of a chat line */
export const promptOf = (line: Line): string =>
  line.request._tag === "Chat" ? line.request.messages.at(-1)!.content : line.request.input
