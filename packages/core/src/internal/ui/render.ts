/**
 * A row's request as the run's pipeline renders it: the ledger keeps each row's record and its request's fingerprint,
 * not the prompt, so the web view imports the run's pipeline module (as `offpeak resume` does), renders the request
 * from the stored record the way the runner does, and says whether its fingerprint is the one that was sent (false:
 * the module changed since).
 *
 * The module is imported once per file version (its modification time), lazily, on the first row inspected.
 *
 * @internal
 */
import { Effect, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import * as Fingerprint from "../../Fingerprint.ts"
import type * as Ledger from "../../Ledger.ts"
import * as Pipeline from "../../Pipeline.ts"
import * as Request from "../../Request.ts"
import type { Rendered, RenderRequest } from "./api.ts"

const message = (u: unknown) => u instanceof Error ? u.message : String(u)

/** a request as JSON for the page: messages, parameters, and the output's JSON Schema */
const requestJson = (request: Request.Request): unknown =>
  request._tag === "Chat"
    ? {
      kind: "chat",
      model: request.model,
      messages: request.messages,
      params: request.params,
      output: request.output === undefined
        ? null
        : { name: request.output.name, schema: JSON.parse(Fingerprint.schemaJson(request.output.schema)) as unknown },
      ...(request.cachePrefix === undefined ? {} : { cachePrefix: request.cachePrefix })
    }
    : { kind: "embedding", model: request.model, input: request.input, dimensions: request.dimensions ?? null }

interface Loaded {
  readonly pipeline: Pipeline.Pipeline<unknown, unknown>
  readonly decodeRecord: (u: unknown) => unknown
  readonly outputSpec: Request.Output | undefined
}

/**
 * Renders requests of runs whose module can be imported here; `timeoutMs` bounds a module's import (default 10 s).
 */
export const make = (options: { readonly timeoutMs?: number | undefined } = {}): RenderRequest => {
  const timeoutMs = options.timeoutMs ?? 10_000
  const loaded = new Map<string, Promise<Loaded>>()

  const load = (module: string): Promise<Loaded> => {
    const absolute = path.resolve(module)
    const stat = fs.statSync(absolute, { throwIfNoEntry: false })
    if (stat === undefined) return Promise.reject(new Error(`the run's pipeline module ${absolute} is not on this machine`))
    const version = `${absolute}?v=${stat.mtimeMs}`
    let entry = loaded.get(version)
    if (entry === undefined) {
      entry = import(`${pathToFileURL(absolute).href}?v=${stat.mtimeMs}`).then((mod: Record<string, unknown>) => {
        const candidate = mod.default ?? mod.pipeline
        if (!Pipeline.isPipeline(candidate)) throw new Error(`${absolute} exports no pipeline`)
        const pipeline = candidate
        return {
          pipeline,
          decodeRecord: Schema.decodeUnknownSync(
            Schema.toCodecJson(pipeline.source.schema as Schema.Codec<unknown, unknown>) as Schema.Codec<unknown, unknown>
          ),
          outputSpec: pipeline.output === undefined
            ? undefined
            : { name: pipeline.outputName ?? "output", schema: pipeline.output as Schema.Codec<unknown, any> }
        }
      })
      loaded.set(version, entry)
    }
    return entry
  }

  return (run: Ledger.Run, record: string, fingerprint: string) =>
    run.module === null
      ? Effect.succeed(null)
      : Effect.tryPromise({
        try: async (): Promise<Rendered> => {
          const { pipeline, decodeRecord, outputSpec } = await load(run.module!)
          const request = Request.withOutput(pipeline.request(decodeRecord(JSON.parse(record)), { provider: run.provider }), outputSpec)
          const rendered = Fingerprint.of(request)
          return { ok: true, request: requestJson(request), fingerprint: rendered, matches: rendered === fingerprint }
        },
        catch: (e) => message(e)
      }).pipe(
        Effect.timeoutOrElse({
          duration: timeoutMs,
          orElse: () => Effect.fail(`importing ${run.module} took over ${timeoutMs / 1000} s`)
        }),
        Effect.catch((error) => Effect.succeed<Rendered>({ ok: false, error: `cannot render the request: ${error}` }))
      )
}
