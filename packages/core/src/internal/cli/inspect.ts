/**
 * `inspect <run> <key>`: everything the ledger knows of one row — its record, its request (rendered again from the
 * pipeline module, and checked against the fingerprint that was sent), its attempts and the batch that last carried
 * it, its failure or its answer with the tokens it took. `--json` prints `Json.Inspect`.
 *
 * @internal
 */
import { Console, Effect, Option, Schema } from "effect"
import { Argument, Command } from "effect/cli"
import * as path from "node:path"
import * as Fingerprint from "../../Fingerprint.ts"
import * as Ledger from "../../Ledger.ts"
import type * as Pipeline from "../../Pipeline.ts"
import * as Request from "../../Request.ts"
import * as Json from "./json.ts"
import { failure, jsonFlag, existingLedgerLayer, loadPipeline, stateDirFlag, stateFlag, usage } from "./shared.ts"

const parse = (text: string | null): unknown => {
  if (text === null) return null
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

/** an `f32` output (base64 little-endian float32) as numbers */
const vector = (base64: string): Array<number> => {
  const bytes = Buffer.from(base64, "base64")
  const floats = new Float32Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.byteLength / 4))
  return Array.from(floats, (x) => Number(x.toPrecision(7)))
}

/** the request a record gives, as the run renders it (the pipeline's output schema attached) */
const render = (pipeline: Pipeline.Pipeline<unknown, unknown>, record: unknown, provider: string): Request.Request => {
  const decode = Schema.decodeUnknownSync(Schema.toCodecJson(pipeline.source.schema as Schema.Codec<unknown, unknown>))
  const output: Request.Output | undefined = pipeline.output === undefined
    ? undefined
    : { name: pipeline.outputName ?? "output", schema: pipeline.output as Schema.Codec<unknown, any> }
  return Request.withOutput(pipeline.request(decode(record), { provider }), output)
}

/** a request as JSON: its model, messages and parameters (the output schema by name) */
const bodyOf = (request: Request.Request): unknown =>
  request._tag === "Chat"
    ? {
      kind: "chat",
      model: request.model,
      messages: request.messages,
      params: request.params,
      ...(request.output !== undefined ? { output: request.output.name } : {})
    }
    : { kind: "embedding", model: request.model, input: request.input, ...(request.dimensions !== undefined ? { dimensions: request.dimensions } : {}) }

const indent = (text: string, by = "    ") => text.split("\n").map((l) => `${by}${l}`).join("\n")
const pretty = (value: unknown) => typeof value === "string" ? value : JSON.stringify(value, null, 2)

/** the `inspect` command */
export const inspectCommand = Command.make(
  "inspect",
  {
    runId: Argument.String("run").pipe(Argument.withDescription("the run id (see offpeak status)")),
    key: Argument.String("key").pipe(Argument.withDescription("the row's key (see offpeak failures)")),
    json: jsonFlag,
    stateDir: stateDirFlag,
    state: stateFlag
  },
  ({ runId, key, json, stateDir, state }) =>
    Effect.gen(function*() {
      const ledger = yield* Ledger.Ledger
      const run = yield* ledger.getRun(runId)
      if (Option.isNone(run)) return yield* usage(`no run "${runId}" in the ledger (offpeak status lists the runs)`)
      const found = yield* ledger.inspect(runId, key)
      if (Option.isNone(found)) return yield* usage(`run ${runId} has no row with key "${key}"`)
      const row = found.value
      const record = parse(row.record)
      // the request again, from the module the run was started with: shown when it renders to what was sent
      let body: unknown = null
      let bodyMatches: boolean | null = null
      let bodyNote: string | undefined
      if (row.request !== null && row.record !== null && run.value.module !== null) {
        const loaded = yield* loadPipeline(run.value.module).pipe(Effect.result)
        if (loaded._tag === "Success") {
          try {
            const request = render(loaded.success, record, run.value.provider)
            body = bodyOf(request)
            bodyMatches = Fingerprint.of(request) === row.request.fingerprint
            if (!bodyMatches) bodyNote = "the module renders this record differently now: this is not the request that was sent"
          } catch (e) {
            bodyNote = `the module cannot render this record now: ${e instanceof Error ? e.message : String(e)}`
          }
        } else {
          bodyNote = `the module cannot be loaded: ${loaded.failure.message.split("\n")[0]}`
        }
      }
      const r = row.request
      const output = r === null || r.output === null ? null : r.format === "f32" ? vector(r.output) : parse(r.output)
      const report: typeof Json.Inspect.Type = {
        runId,
        key: row.key,
        position: row.position,
        record,
        failure: row.failure === null ? null : { kind: row.failure.kind, message: row.failure.message, raw: row.failure.raw ?? null },
        request: r === null ? null : {
          fingerprint: r.fingerprint,
          state: r.state,
          attempts: r.attempts,
          cached: r.cached,
          body,
          bodyMatches,
          batch: r.batch,
          failure: r.failure === null ? null : { kind: r.failure.kind, message: r.failure.message, raw: r.failure.raw ?? null },
          output,
          usage: r.usage === null
            ? null
            : { inputTokens: r.usage.inputTokens, outputTokens: r.usage.outputTokens, cachedInputTokens: r.usage.cachedInputTokens ?? null }
        }
      }
      if (json) return yield* Console.log(Json.render(Json.Inspect, report))
      const out: Array<string> = [`row "${row.key}" of run ${runId} (source row ${row.position})`, "  record", indent(pretty(record))]
      if (row.failure !== null) {
        out.push(`  failed     ${row.failure.kind}: ${row.failure.message}`)
        if (row.failure.raw !== undefined) out.push(indent(row.failure.raw))
      }
      if (r === null) {
        if (row.failure === null) out.push("  request    none yet")
      } else {
        const batch = r.batch === null
          ? "never sent"
          : `last sent in batch ${r.batch.id} (${[r.batch.remoteId, r.batch.mode, r.batch.state].filter((x) => x !== null).join(", ")})`
        out.push(
          `  request    ${r.state} · ${r.attempts} attempt${r.attempts === 1 ? "" : "s"} · ${r.cached ? "answered from the result cache · " : ""}${batch}`,
          `  custom id  ${r.fingerprint}`
        )
        if (body !== null) {
          out.push(`  sent       ${bodyMatches === true ? "(rendered again from the pipeline module: the same fingerprint)" : ""}`.trimEnd())
          out.push(indent(pretty(body)))
        }
        if (bodyNote !== undefined) out.push(`    (${bodyNote})`)
        if (r.failure !== null) {
          out.push(`  failed     ${r.failure.kind}: ${r.failure.message}`)
          if (r.failure.raw !== undefined) out.push("  raw answer", indent(r.failure.raw))
        }
        if (output !== null) {
          out.push(
            "  answer",
            Array.isArray(output) && r.format === "f32"
              ? indent(`${output.length}-dimension vector [${output.slice(0, 6).join(", ")}${output.length > 6 ? ", …" : ""}]`)
              : indent(pretty(output))
          )
        }
        if (r.usage !== null) {
          out.push(
            `  usage      ${r.usage.inputTokens} tokens in${r.usage.cachedInputTokens ? ` (${r.usage.cachedInputTokens} cached)` : ""} · ` +
              `${r.usage.outputTokens} out`
          )
        }
      }
      yield* Console.log(out.join("\n"))
    }).pipe(
      Effect.provide(existingLedgerLayer(path.resolve(stateDir), Option.getOrUndefined(state))),
      Effect.mapError(failure)
    )
).pipe(Command.withDescription("One row of a run: its record, request, attempts, batch and answer"))
