/**
 * Every provider under the same tests: how to start its emulator, build its
 * adapter, compute what the emulator must answer for a ticket, list what the
 * emulator was asked to create, and tune its knobs.
 */
import type * as AdaptiveLimit from "@offpeak/core/AdaptiveLimit"
import * as Fingerprint from "@offpeak/core/Fingerprint"
import type * as Provider from "@offpeak/core/Provider"
import * as Request from "@offpeak/core/Request"
import { AnthropicBatch, Emulator as AnthropicEmulator } from "@offpeak/providers/anthropic"
import { GeminiBatch, GeminiEmulator } from "@offpeak/providers/google"
import { Engine } from "@offpeak/providers/local"
import { Emulator as OpenAiEmulator, OpenAiBatch } from "@offpeak/providers/openai"
import Anthropic from "@anthropic-ai/sdk"
import { GoogleGenAI } from "@google/genai"
import type { Effect, Layer, Scope } from "effect"
import { Redacted } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import OpenAI from "openai"
import type { ChatCompletionCreateParamsNonStreaming } from "openai/resources/chat/completions"
import * as AnthropicAnswer from "../../packages/providers/anthropic/emulator/answer.ts"
import * as GeminiAnswer from "../../packages/providers/google/internal/geminiEmulatorAnswer.ts"
import * as Fixture from "../fixtures/tickets.pipeline.ts"

export interface ProviderCase {
  readonly name: "openai" | "anthropic" | "gemini"
  /** the emulator in this process, closed with the scope */
  readonly serve: (knobs: Record<string, unknown>) => Effect.Effect<{ readonly url: string }, unknown, Scope.Scope>
  /** the adapter against the emulator at `url`; `syncLimit`: the adaptive limit of its synchronous calls */
  readonly layer: (url: string, options?: { readonly syncLimit?: AdaptiveLimit.AdaptiveLimit }) => Layer.Layer<Provider.Provider>
  /** the environment the CLI needs to use an emulator at `url` */
  readonly cliEnv: (url: string) => Record<string, string>
  /** what the emulator must answer for a ticket: the engine run on the exact request the adapter sent */
  readonly expected: (ticket: Fixture.Ticket) => unknown
  /** every batch the emulator created: the custom ids of its results, in the order they came back */
  readonly created: (url: string) => Promise<ReadonlyArray<ReadonlyArray<string>>>
  /** knobs: per-line failures, a final (client error) and a retryable (server error) rate */
  readonly lineFailures: (final: number, retryable: number) => Record<string, unknown>
  /** the messages those two kinds of failure carry */
  readonly finalFailure: RegExp
  readonly retryableFailure: RegExp
  /** knobs: a batch whose body is over `bytes` is refused as too large */
  readonly refuseOver: (bytes: number) => Record<string, unknown>
  /** knobs: the first `times` synchronous calls are answered 429 with a retry-after of `ms` */
  readonly syncRateLimited: (times: number, ms: number) => Record<string, unknown>
}

const request = (ticket: Fixture.Ticket, provider: string) =>
  Request.withOutput(Fixture.request(ticket, { provider }), { name: "label", schema: Fixture.Label })

export const openai: ProviderCase = {
  name: "openai",
  serve: (knobs) => OpenAiEmulator.serve({ validationMs: 5, finalizingMs: 5, ...knobs }),
  layer: (url, options) =>
    OpenAiBatch.layer({
      apiKey: Redacted.make("test"),
      baseURL: url,
      pollInterval: { initial: "20 millis", max: "200 millis" },
      ...options
    }),
  cliEnv: (url) => ({ OPENAI_API_KEY: "test", OPENAI_BASE_URL: url }),
  expected: (ticket) => {
    const body = OpenAiBatch.requestLine(request(ticket, "openai"), "x").body as ChatCompletionCreateParamsNonStreaming
    const format = body.response_format as { json_schema: { schema: unknown } }
    return JSON.parse(Engine.chat({
      model: body.model,
      messages: body.messages.map((m) => ({ role: m.role, content: m.content as string })),
      maxTokens: body.max_completion_tokens ?? undefined,
      jsonSchema: format.json_schema.schema
    }).text)
  },
  created: async (url) => {
    const client = new OpenAI({ apiKey: "test", baseURL: url, maxRetries: 10 })
    const out: Array<Array<string>> = []
    for await (const b of client.batches.list({ limit: 100 })) {
      const ids: Array<string> = []
      for (const file of [b.output_file_id, b.error_file_id]) {
        if (!file) continue
        const text = await (await client.files.content(file)).text()
        for (const line of text.split("\n")) if (line.length > 0) ids.push(JSON.parse(line).custom_id)
      }
      out.push(ids)
    }
    return out
  },
  lineFailures: (final, retryable) => ({ lineFailures: [{ status: 400, rate: final }, { status: 500, rate: retryable }] }),
  finalFailure: /^HTTP 400/,
  retryableFailure: /^HTTP 500/,
  refuseOver: (bytes) => ({ maxFileBytes: bytes }),
  syncRateLimited: (times, ms) => ({
    endpointFaults: [{ endpoint: "chat.completions.create", status: 429, times, retryAfter: ms / 1000 }]
  })
}

export const anthropic: ProviderCase = {
  name: "anthropic",
  serve: (knobs) => AnthropicEmulator.serve(knobs),
  layer: (url, options) =>
    AnthropicBatch.layer({
      apiKey: Redacted.make("test"),
      baseURL: url,
      pollInterval: { initial: "20 millis", max: "200 millis" },
      ...options
    }),
  cliEnv: (url) => ({ ANTHROPIC_API_KEY: "test", ANTHROPIC_BASE_URL: url }),
  expected: (ticket) => {
    const r = request(ticket, "anthropic")
    const line = AnthropicBatch.requestLine(r as Request.Chat, Fingerprint.of(r))
    const parsed = AnthropicAnswer.parse(line.params, AnthropicBatch.SAMPLING_REMOVED_IN)
    if (typeof parsed === "string") throw new Error(parsed)
    return JSON.parse(Engine.chat(AnthropicAnswer.engineInput(parsed)).text)
  },
  created: async (url) => {
    const client = new Anthropic({ apiKey: "test", baseURL: url, maxRetries: 10 })
    const out: Array<Array<string>> = []
    for await (const b of client.messages.batches.list({ limit: 100 })) {
      const ids: Array<string> = []
      if (b.processing_status === "ended") {
        for await (const result of await client.messages.batches.results(b.id)) ids.push(result.custom_id)
      }
      out.push(ids)
    }
    return out
  },
  lineFailures: (final, retryable) => ({
    lineFailures: [{ type: "invalid_request_error", rate: final }, { type: "api_error", rate: retryable }]
  }),
  finalFailure: /^invalid_request_error/,
  retryableFailure: /^api_error/,
  refuseOver: (bytes) => ({ maxBodyBytes: bytes }),
  syncRateLimited: (times, ms) => ({ endpointFaults: [{ endpoint: "messages", status: 429, times, retryAfterMs: ms }] })
}

export const gemini: ProviderCase = {
  name: "gemini",
  serve: (knobs) => GeminiEmulator.serve(knobs),
  layer: (url, options) =>
    GeminiBatch.layer({
      apiKey: Redacted.make("test"),
      baseURL: url,
      pollInterval: { initial: "20 millis", max: "200 millis" },
      ...options
    }),
  cliEnv: (url) => ({ GEMINI_API_KEY: "test", GOOGLE_GEMINI_BASE_URL: url }),
  expected: (ticket) => {
    const line = GeminiBatch.batchLine(request(ticket, "gemini"), "x")
    const answer = GeminiAnswer.generate(line.request, line.request.model, "r")
    if ("code" in answer) throw new Error(answer.message)
    return JSON.parse((answer.body as { candidates: Array<{ content: { parts: Array<{ text: string }> } }> }).candidates[0]!.content.parts[0]!.text)
  },
  created: async (url) => {
    const ai = new GoogleGenAI({ apiKey: "test", vertexai: false, httpOptions: { baseUrl: url, apiVersion: "v1beta" } })
    const out: Array<Array<string>> = []
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-gemini-created-"))
    for await (const listed of await ai.batches.list({ config: { pageSize: 100 } })) {
      const job = await ai.batches.get({ name: listed.name! })
      const ids: Array<string> = []
      for (const r of job.dest?.inlinedResponses ?? []) ids.push(r.metadata!.key!)
      if (job.dest?.fileName !== undefined) {
        const file = path.join(dir, `${out.length}.jsonl`)
        await ai.files.download({ file: job.dest.fileName, downloadPath: file })
        for (const line of fs.readFileSync(file, "utf8").split("\n")) if (line.length > 0) ids.push(JSON.parse(line).key)
      }
      out.push(ids)
    }
    fs.rmSync(dir, { recursive: true, force: true })
    return out
  },
  lineFailures: (final, retryable) => ({
    lineFailures: [{ code: "INVALID_ARGUMENT", rate: final }, { code: "INTERNAL", rate: retryable }]
  }),
  finalFailure: /^INVALID_ARGUMENT/,
  retryableFailure: /^INTERNAL/,
  refuseOver: (bytes) => ({ maxInlineBytes: bytes, maxFileBytes: bytes }),
  syncRateLimited: (times, ms) => ({
    endpointFaults: [{ endpoint: "models.generateContent", status: 429, times, retryAfter: ms / 1000 }]
  })
}

export const all: ReadonlyArray<ProviderCase> = [openai, anthropic, gemini]

/** what each batch an OpenAI emulator created was asked: the custom ids of its input file (the requests paid for) */
export const openAiSent = async (url: string): Promise<ReadonlyArray<ReadonlyArray<string>>> => {
  const client = new OpenAI({ apiKey: "test", baseURL: url, maxRetries: 10 })
  const out: Array<Array<string>> = []
  for await (const b of client.batches.list({ limit: 100 })) {
    const text = await (await client.files.content(b.input_file_id)).text()
    out.push(text.split("\n").filter((line) => line.length > 0).map((line) => JSON.parse(line).custom_id as string))
  }
  return out
}
