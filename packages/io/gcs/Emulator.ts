/**
 * A local emulator of the Cloud Storage JSON API, faithful enough for the
 * official `@google-cloud/storage` client with its integrity checks on:
 * buckets, objects, simple / multipart / resumable uploads, downloads (whole
 * or ranged) with `x-goog-hash`, listing with `prefix` / `delimiter` / pages,
 * metadata updates, deletes and generation preconditions.
 *
 * **Details**
 *
 * - Every object's `crc32c` (CRC32C, base64 of the big-endian value) and
 *   `md5Hash` are computed from the bytes received, answered on upload and
 *   sent as `x-goog-hash: crc32c=…,md5=…` (with
 *   `x-goog-stored-content-encoding: identity`) on download, so the client's
 *   default validation runs for real. Hashes a client sends with an upload
 *   (`x-goog-hash`, or `crc32c`/`md5Hash` in the metadata) are checked: a
 *   mismatch is refused with 400 and nothing is stored.
 * - Served both under `/storage/v1` (`new Storage({ apiEndpoint: url })`) and
 *   without it (`STORAGE_EMULATOR_HOST=url`); uploads under
 *   `/upload/storage/v1`, downloads also under `/download/storage/v1`.
 * - State is on disk (`dir`): objects' bytes and metadata, buckets and open
 *   resumable sessions. Each write lands in a temp file and is renamed, so a
 *   process killed at any point leaves every object whole, and a new `serve`
 *   on the same folder carries on (a resumable upload can continue where it
 *   stopped).
 * - Faults on demand (see {@link Options}): HTTP errors on any endpoint, for
 *   the first N calls or at a rate; downloads whose bytes are spoiled (the
 *   client must notice); uploads answered with a wrong `crc32c` (the client
 *   must notice, delete the object and fail).
 * - Not served: ACLs, IAM, object versioning (only the live generation is
 *   kept), compose, copy/rewrite, signed URLs, notifications, XML API.
 *
 * @example
 * ```ts
 * import { Emulator } from "@offpeak/io/gcs"
 * import { Storage } from "@google-cloud/storage"
 *
 * const program = Effect.gen(function*() {
 *   const gcs = yield* Emulator.serve({ dir: ".offpeak/gcs" })
 *   const storage = new Storage({ projectId: "test-proj", apiEndpoint: gcs.url })
 *   // await storage.createBucket("staging"); await storage.bucket("staging").file("a.jsonl").save(data)
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"
import type { Scope } from "effect"
import * as Faults from "./internal/faults.ts"
import * as Http from "./internal/http.ts"
import * as Routes from "./internal/routes.ts"
import { Store } from "./internal/store.ts"

// ===== Models =====

/**
 * An endpoint of the emulator, by its API method name (`objects.insert` is
 * every upload request, `objects.download` an `alt=media` read).
 *
 * @since 0.1.0
 * @category models
 */
export type EndpointName = Routes.EndpointName

/**
 * The emulator's knobs: plain JSON. Fault counters start when `serve` starts.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** persist all state here; absent: a fresh temp folder, removed when the scope closes */
  readonly dir?: string | undefined
  /** seeds the fault rates (default 0) */
  readonly seed?: number | undefined
  /**
   * HTTP errors on chosen endpoints (`"*"`: any), e.g.
   * `[{ endpoint: "objects.download", status: 503, times: 2 }]`: the first
   * `times` calls that reach the rule fail, then each with probability `rate`
   * (neither: every call). Google's error shape; the client retries 429 and 5xx.
   */
  readonly endpointFaults?: ReadonlyArray<Faults.EndpointFault<EndpointName>> | undefined
  /** the first N whole-object downloads are sent with their last byte changed (the hashes stay the true ones) */
  readonly corruptDownloads?: number | undefined
  /** the first N finished uploads are answered with a wrong `crc32c` (the object is stored correctly) */
  readonly wrongUploadHashes?: number | undefined
  /** largest object accepted (default 5 GiB; multipart uploads are held in memory, resumable ones are not) */
  readonly maxObjectBytes?: number | undefined
}

/**
 * Counters since `serve` started.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  readonly uploads: number
  readonly bytesUploaded: number
  readonly downloads: number
  readonly objects: number
}

/**
 * A running emulator.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handle {
  /** the origin to give the client as `apiEndpoint` (or `STORAGE_EMULATOR_HOST`), e.g. `http://127.0.0.1:41234` */
  readonly url: string
  /** the folder holding its state */
  readonly dir: string
  readonly stats: Effect.Effect<Stats>
}

// ===== Errors =====

/**
 * The emulator could not start (folder not usable, port taken, bad knobs).
 *
 * @since 0.1.0
 * @category errors
 */
export class EmulatorError extends Schema.TaggedError<EmulatorError>()("EmulatorError", {
  message: Schema.String
}) {}

// ===== Constructors =====

const message = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

/**
 * Starts the emulator on `host:port` (default `127.0.0.1`, an ephemeral
 * port). It stops when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve = (
  options: Options & { readonly port?: number | undefined; readonly host?: string | undefined } = {}
): Effect.Effect<Handle, EmulatorError, Scope.Scope> =>
  Effect.gen(function*() {
    const faults = options.endpointFaults ?? []
    const wrong = Faults.check(faults, Routes.ENDPOINTS)
    if (wrong !== undefined) return yield* new EmulatorError({ message: `bad emulator knobs: ${wrong}` })
    const dir = yield* Http.stateFolder(options.dir, "offpeak-gcs-emulator").pipe(
      Effect.mapError((message) => new EmulatorError({ message }))
    )
    const store = yield* Effect.try({
      try: () => new Store(dir),
      catch: (cause) => new EmulatorError({ message: `cannot open the emulator folder ${dir}: ${message(cause)}` })
    })
    let corrupt = 0
    let wrongHash = 0
    const runtime: Routes.Runtime = {
      store,
      fault: Faults.make(faults, options.seed ?? 0),
      corruptDownload: () => corrupt++ < (options.corruptDownloads ?? 0),
      wrongUploadHash: () => wrongHash++ < (options.wrongUploadHashes ?? 0),
      maxObjectBytes: options.maxObjectBytes ?? 5 * 1024 ** 3,
      stats: { uploads: 0, bytesUploaded: 0, downloads: 0 }
    }
    const url = yield* Http.listen(Routes.handle(runtime), options).pipe(
      Effect.mapError((message) => new EmulatorError({ message }))
    )
    const stats = Effect.sync((): Stats => {
      let objects = 0
      for (const bucket of store.buckets.values()) objects += bucket.objects.size
      return { ...runtime.stats, objects }
    })
    return { url, dir, stats }
  })
