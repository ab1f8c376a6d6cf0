/**
 * A local emulator of OpenAI's Files + Batch API, faithful enough that the
 * official `openai` SDK drives a whole batch lifecycle against it: upload a
 * JSONL file, create a batch, poll it through `validating` → `in_progress` →
 * `finalizing` → `completed` (or `failed`, `expired`, `cancelling` →
 * `cancelled`), download the output and error files. Answers come from the
 * deterministic local engine (`@offpeak/providers/local`).
 *
 * **Details**
 *
 * - State is derived lazily from timestamps on every read (no timers); when a
 *   batch first reaches a terminal state its output and error files are
 *   written, in slices that yield to the event loop.
 * - Everything is persisted in `dir` (files as bytes, batches as JSON): a new
 *   `serve({ dir })` after a crash carries on as if nothing had happened.
 * - Faults of the real service on demand: per-line HTTP errors
 *   (`lineFailures`), validation failures, expiry with partial output, slow
 *   progression, shuffled output order.
 * - Also serves the synchronous `POST /v1/chat/completions` and
 *   `POST /v1/embeddings`.
 *
 * @example
 * ```ts
 * import { Emulator } from "@offpeak/providers/openai"
 * import OpenAI from "openai"
 *
 * const program = Effect.gen(function*() {
 *   const emulator = yield* Emulator.serve({ linesPerSecond: 1_000 })
 *   const client = new OpenAI({ apiKey: "test", baseURL: emulator.url })
 *   // client.files.create(...), client.batches.create(...), ...
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import { NodeHttpServer } from "@effect/platform-node"
import { Context, Effect, Layer, Schema, Scope } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import * as fs from "node:fs"
import { createServer } from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import * as Routes from "./internal/emulatorRoutes.ts"
import * as Runtime from "./internal/emulatorRuntime.ts"
import * as Store from "./internal/emulatorStore.ts"

// ===== Models =====

/**
 * The emulator's knobs. Timings apply to batches created while they are set:
 * each batch keeps the knobs it was created under, restarts included.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** persist all state here (files and batches); absent: a fresh temp folder, removed when the scope closes */
  readonly dir?: string | undefined
  /** seeds the injected failures (default 0) */
  readonly seed?: number | undefined
  /** time spent in `validating` (default 20 ms) */
  readonly validationMs?: number | undefined
  /** processing speed in `in_progress` (default 20,000 lines per second) */
  readonly linesPerSecond?: number | undefined
  /** time in `finalizing` (default 20 ms) */
  readonly finalizingMs?: number | undefined
  /** time in `cancelling` (default 20 ms) */
  readonly cancellingMs?: number | undefined
  /** a batch not done this long after creation expires with partial output (default 24 h) */
  readonly completionWindowMs?: number | undefined
  /**
   * per-line injected HTTP errors, e.g. `[{ status: 500, rate: 0.02 }, { status: 400, rate: 0.01 }]`;
   * drawn from a hash of (seed, batch id, custom_id), so a line retried in another batch draws afresh
   */
  readonly lineFailures?: ReadonlyArray<{ readonly status: number; readonly rate: number }> | undefined
  /** shuffle the order of output and error lines, seeded by the batch id (default true) */
  readonly shuffle?: boolean | undefined
  /** requests per batch (default 50,000) */
  readonly maxLinesPerBatch?: number | undefined
  /** upload size limit (default 200 MB; over it: 400 "File is too large.") */
  readonly maxFileBytes?: number | undefined
}

/**
 * Counters since the folder was created (they survive restarts).
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  readonly batchesCreated: number
  readonly filesUploaded: number
  /** requests answered (successfully or with an HTTP error) by batches that ended */
  readonly linesProcessed: number
}

/**
 * A running emulator.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handle {
  /** the base URL to give the SDK, ending in `/v1`, e.g. `http://127.0.0.1:41234/v1` */
  readonly url: string
  /** the folder holding its state */
  readonly dir: string
  readonly stats: Effect.Effect<Stats>
}

// ===== Errors =====

/**
 * The emulator could not start (folder not usable, port taken, …).
 *
 * @since 0.1.0
 * @category errors
 */
export class EmulatorError extends Schema.TaggedError<EmulatorError>()("EmulatorError", {
  message: Schema.String
}) {}

// ===== Constructors =====

const knobsOf = (options: Options): Store.Knobs => ({
  seed: options.seed ?? 0,
  validationMs: Math.max(0, options.validationMs ?? 20),
  linesPerSecond: options.linesPerSecond !== undefined && options.linesPerSecond > 0 ? options.linesPerSecond : 20_000,
  finalizingMs: Math.max(0, options.finalizingMs ?? 20),
  cancellingMs: Math.max(0, options.cancellingMs ?? 20),
  completionWindowMs: options.completionWindowMs ?? 24 * 60 * 60 * 1000,
  lineFailures: (options.lineFailures ?? []).map((f) => ({ status: f.status, rate: f.rate })),
  shuffle: options.shuffle ?? true,
  maxLinesPerBatch: options.maxLinesPerBatch ?? 50_000
})

const message = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

const folder = (dir: string | undefined): Effect.Effect<string, EmulatorError, Scope.Scope> =>
  dir !== undefined
    ? Effect.succeed(path.resolve(dir))
    : Effect.acquireRelease(
      Effect.try({
        try: () => fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-openai-emulator-")),
        catch: (cause) => new EmulatorError({ message: `cannot create a temp folder: ${message(cause)}` })
      }),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )

const baseUrl = (address: HttpServer.HttpServer["Service"]["address"]): string => {
  const url = new URL(HttpServer.formatAddress(address))
  if (url.hostname === "0.0.0.0" || url.hostname === "[::]") url.hostname = "127.0.0.1"
  return `${url.origin}/v1`
}

/**
 * Starts the emulator on `host:port` (default `127.0.0.1`, an ephemeral
 * port), serving under `/v1`. It stops when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve = (
  options: Options & { readonly port?: number | undefined; readonly host?: string | undefined } = {}
): Effect.Effect<Handle, EmulatorError, Scope.Scope> =>
  Effect.gen(function*() {
    const dir = yield* folder(options.dir)
    const store = yield* Effect.try({
      try: () => Store.open(dir),
      catch: (cause) => new EmulatorError({ message: `cannot open the emulator folder ${dir}: ${message(cause)}` })
    })
    const runtime = yield* Runtime.make(store, knobsOf(options), options.maxFileBytes ?? 200 * 1024 * 1024)
    const host = options.host ?? "127.0.0.1"
    const server = HttpRouter.serve(Routes.layer(runtime), { disableLogger: true, disableListenLog: true }).pipe(
      // idle keep-alive connections of SDK clients would otherwise hold the close for seconds
      Layer.provideMerge(
        NodeHttpServer.layer(createServer, { port: options.port ?? 0, host, gracefulShutdownTimeout: "100 millis" })
      )
    )
    const context = yield* Layer.build(server).pipe(
      Effect.mapError((cause) =>
        new EmulatorError({ message: `cannot start the emulator on ${host}:${options.port ?? 0}: ${message(cause)}` })
      )
    )
    const url = yield* Effect.try({
      try: () => baseUrl(Context.get(context, HttpServer.HttpServer).address),
      catch: (cause) => new EmulatorError({ message: `cannot tell the emulator's address: ${message(cause)}` })
    })
    const stats = Effect.sync((): Stats => {
      let linesProcessed = 0
      for (const batch of store.batches.values()) if (batch.final !== null) linesProcessed += batch.processed
      return { batchesCreated: store.batches.size, filesUploaded: store.filesUploaded(), linesProcessed }
    })
    return { url, dir, stats }
  })
