/**
 * The Vertex CLI plugin on its own: the local stack (the Vertex, BigQuery and Cloud Storage emulators, in `vertex.ts`)
 * is loaded only when a run uses it (a run on the real Vertex AI does not load it).
 *
 * @since 0.1.0
 */
import type * as ProviderPlugin from "@offpeak/core/ProviderPlugin"
import { Effect, Layer } from "effect"
import * as VertexBatch from "./VertexBatch.ts"

const local = () => import("./vertex.ts")

/**
 * The CLI plugin: the real Vertex AI when `GOOGLE_CLOUD_PROJECT` is set
 * (`GOOGLE_CLOUD_LOCATION`, `OFFPEAK_VERTEX_BUCKET` for JSONL batches,
 * Google's application default credentials; see `VertexBatch.layerConfig`),
 * else the local stack in-process (`serveLocal` of `@offpeak/providers/vertex`) with its state under
 * the CLI's state folder and the knobs of `OFFPEAK_EMULATOR_KNOBS`
 * (`VertexEmulator.Options`; a knob the emulator does not have is
 * refused, naming the closest).
 *
 * On the local stack the layer also provides a `ConfigProvider` read from the
 * environment once the stack is up: Effect's default one read the environment
 * when the process first looked at a setting (the CLI's own flags), before
 * `BIGQUERY_EMULATOR_HOST`, `STORAGE_EMULATOR_HOST` and `GOOGLE_CLOUD_PROJECT`
 * were set, so without it a BigQuery source or pushdown of the run would not
 * find the emulators.
 *
 * @since 0.1.0
 * @category plugins
 */
export const plugin: ProviderPlugin.Plugin = {
  name: "vertex",
  apiKeyEnv: "GOOGLE_CLOUD_PROJECT",
  layer: (options) => {
    const project = process.env.GOOGLE_CLOUD_PROJECT ?? ""
    if (project.length > 0) {
      options.onNotice(`using Vertex AI in project ${project} (${process.env.GOOGLE_CLOUD_LOCATION ?? "us-central1"})`)
      return VertexBatch.layerConfig()
    }
    return Layer.unwrap(Effect.map(Effect.promise(local), (m) => m.localLayer(options)))
  },
  serveEmulator: (serve) => Effect.flatMap(Effect.promise(local), (m) => m.serveEmulator(serve))
}
