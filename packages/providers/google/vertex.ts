/**
 * `@offpeak/providers/vertex`: the Vertex AI batch prediction adapter, its
 * local emulator, and the plugin the `offpeak` CLI loads for
 * `--provider vertex`.
 *
 * @since 0.1.0
 */
import { Emulator as BigQueryEmulator } from "@offpeak/io/bigquery"
import { Emulator as GcsEmulator } from "@offpeak/io/gcs"
import * as ProviderPlugin from "@offpeak/core/ProviderPlugin"
import * as Provider from "@offpeak/core/Provider"
import { ConfigProvider, Context, Effect, Layer } from "effect"
import { PassThroughClient } from "google-auth-library"
import * as path from "node:path"
import * as VertexBatch from "./VertexBatch.ts"
import * as VertexEmulator from "./VertexEmulator.ts"

export {
  /**
   * The Vertex AI batch prediction adapter (table jobs over BigQuery, JSONL batches through Cloud Storage).
   *
   * @since 0.1.0
   */
  VertexBatch,
  /**
   * The local Vertex AI batch prediction emulator (reads and writes the BigQuery and Cloud Storage emulators).
   *
   * @since 0.1.0
   */
  VertexEmulator
}

/** the project every emulator of the local stack answers for */
const EMULATOR_PROJECT = "offpeak-local"
/** the bucket JSONL batches are staged in on the local Cloud Storage emulator */
const EMULATOR_BUCKET = "offpeak-staging"

/**
 * The local Google stack in this process: the Cloud Storage, BigQuery and
 * Vertex emulators with their state under `dir` (`gcs/`, `bigquery/`,
 * `vertex/`), Vertex reading and writing the other two. It sets
 * `GOOGLE_CLOUD_PROJECT`, `BIGQUERY_EMULATOR_HOST` and `STORAGE_EMULATOR_HOST`
 * (when unset) so BigQuery sources, sinks and pushdowns of the same process
 * talk to these emulators, and creates the staging bucket. Effect's default
 * `ConfigProvider` keeps the environment it first read: code that reads these
 * through `Config` afterwards needs `ConfigProvider.fromEnv()` made after this
 * (the {@link plugin} provides one).
 *
 * @since 0.1.0
 * @category constructors
 */
export const serveLocal = (
  options: VertexEmulator.Options & { readonly dir: string; readonly port?: number | undefined; readonly host?: string | undefined }
) =>
  Effect.gen(function*() {
    const gcs = yield* GcsEmulator.serve({ dir: path.join(options.dir, "gcs") })
    const bigquery = yield* BigQueryEmulator.serve({ dir: path.join(options.dir, "bigquery") })
    const vertex = yield* VertexEmulator.serve({ ...options, dir: path.join(options.dir, "vertex"), bigqueryUrl: bigquery.url, storageUrl: gcs.url })
    process.env.GOOGLE_CLOUD_PROJECT ??= EMULATOR_PROJECT
    process.env.BIGQUERY_EMULATOR_HOST ??= bigquery.url
    process.env.STORAGE_EMULATOR_HOST ??= gcs.url
    yield* Effect.tryPromise(async () => {
      const { Storage } = await import("@google-cloud/storage")
      await new Storage({ projectId: EMULATOR_PROJECT, apiEndpoint: gcs.url }).createBucket(EMULATOR_BUCKET).catch((e: { code?: number }) => {
        if (e.code !== 409) throw e
      })
    })
    return { url: vertex.url, dir: options.dir, bigqueryUrl: bigquery.url, storageUrl: gcs.url }
  })

/**
 * The names of the Vertex emulator's knobs (`VertexEmulator.Options` without its folder and the other emulators'
 * URLs): `OFFPEAK_EMULATOR_KNOBS` and `offpeak emulator vertex --knobs` naming any other are refused.
 *
 * @since 0.1.0
 * @category constants
 */
export const knobNames: ReadonlyArray<string> = [
  "seed",
  "pendingMs",
  "rowsPerSecond",
  "chunkRows",
  "cancellingMs",
  "completionWindowMs",
  "rowFailures",
  "malformedAnswers",
  "shuffle",
  "maxRunningJobs",
  "endpointFaults",
  "createSucceedsThenFails",
  "createLatency",
  "failJobs"
] satisfies ReadonlyArray<keyof VertexEmulator.Options>

const knobsOf = (raw: string, from: string) =>
  Effect.fromResult(ProviderPlugin.parseKnobs(raw, { from, known: knobNames, emulator: "Vertex emulator" })).pipe(
    Effect.map((knobs) => knobs as VertexEmulator.Options)
  )

/**
 * The plugin's local stack (see {@link plugin}): the emulators served in-process, knobs from
 * `OFFPEAK_EMULATOR_KNOBS`, the adapter on them, and a `ConfigProvider` read from the environment once they are up.
 *
 * @since 0.1.0
 * @category plugins
 */
export const localLayer = ({ emulatorDir, onNotice }: Parameters<ProviderPlugin.Plugin["layer"]>[0]) =>
  Layer.effectContext(
    Effect.gen(function*() {
      const knobs = yield* knobsOf(process.env.OFFPEAK_EMULATOR_KNOBS ?? "", "OFFPEAK_EMULATOR_KNOBS")
      const local = yield* serveLocal({ ...knobs, dir: emulatorDir })
      onNotice(
        `no GOOGLE_CLOUD_PROJECT: running against the local Vertex, BigQuery and Cloud Storage emulators at ${local.url}, ${local.bigqueryUrl}, ${local.storageUrl} (state in ${local.dir})`
      )
      const provider = yield* VertexBatch.make({
        project: EMULATOR_PROJECT,
        location: "us-central1",
        baseURL: local.url,
        authClient: new PassThroughClient(),
        staging: { bucket: EMULATOR_BUCKET, storage: { apiEndpoint: local.storageUrl } },
        pollInterval: { initial: "200 millis", max: "2 seconds" }
      })
      // the emulator's answers are made up: kept apart from the real API's in the result cache
      return Context.make(Provider.Provider, { ...provider, endpoint: "emulator" }).pipe(
        Context.add(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv())
      )
    })
  )

/**
 * `offpeak emulator vertex`: the local stack with the given knobs (checked against {@link knobNames}).
 *
 * @since 0.1.0
 * @category plugins
 */
export const serveEmulator: ProviderPlugin.Plugin["serveEmulator"] = (serve) =>
  Effect.gen(function*() {
    const knobs = serve.knobs === undefined ? {} : yield* knobsOf(JSON.stringify(serve.knobs), "the emulator's knobs")
    return yield* serveLocal({ ...knobs, dir: serve.dir, port: serve.port, host: serve.host })
  })

export {
  /**
   * The CLI plugin (also `@offpeak/providers/vertex/plugin`, which loads the local stack only when a run uses it).
   *
   * @since 0.1.0
   * @category plugins
   */
  plugin
} from "./vertexPlugin.ts"
