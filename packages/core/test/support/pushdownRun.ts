/**
 * Runs the pushdown test pipeline in a process of its own, so a test can SIGKILL it at a crash point
 * (`OFFPEAK_FAILPOINTS`) and resume it from another: `node pushdownRun.ts <dir> [resume-run-id]`.
 */
import * as Ledger from "../../src/Ledger.ts"
import * as Pipeline from "../../src/Pipeline.ts"
import * as Provider from "../../src/Provider.ts"
import * as Request from "../../src/Request.ts"
import * as SqliteClient from "../../src/SqliteClient.ts"
import { Effect, Layer } from "effect"
import * as path from "node:path"
import * as TableProvider from "./TableProvider.ts"

const [dir, resume] = process.argv.slice(2) as [string, string | undefined]

export const pipeline = Pipeline.make({
  name: "pushdown",
  source: TableProvider.source(dir),
  key: (d) => d.id,
  request: (d) => Request.chat({ model: "m", prompt: d.text }),
  sink: { name: "unused", write: () => Effect.void },
  retry: { maxAttempts: 3 }
})

const layer = Layer.mergeAll(
  Layer.succeed(Provider.Provider, TableProvider.provider(dir)),
  Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(dir, "state.db") })))
)

const summary = await Effect.runPromise(
  Pipeline.run(pipeline, { stateDir: dir, runId: "pd", ...(resume !== undefined ? { resume } : {}) }).pipe(Effect.provide(layer))
)
process.stdout.write(JSON.stringify(summary) + "\n")
