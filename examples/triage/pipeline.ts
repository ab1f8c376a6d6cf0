/**
 * Triage: classify support tickets from a CSV into a typed label schema, with
 * OpenAI's Batch API or Anthropic's Message Batches (the local emulator of
 * either when its API key is not set).
 *
 *   npm run offpeak -- run examples/triage/pipeline.ts
 *   npm run offpeak -- run examples/triage/pipeline.ts --provider anthropic
 *
 * Results: out/triage/part-*.jsonl (one line per ticket), rows that could not
 * be read or answered: out/triage/dead-letter/part-*.jsonl, with the reason.
 */
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Request from "@offpeak/core/Request"
import { Csv } from "@offpeak/io/csv"
import { Jsonl } from "@offpeak/io/jsonl"
import { Schema } from "effect"
import { fileURLToPath } from "node:url"

/** one row of tickets.csv */
export const Ticket = Schema.Struct({
  id: Schema.NonEmptyString,
  customer: Schema.String,
  subject: Schema.String,
  body: Schema.String
})

/** what the model must answer */
export const Triage = Schema.Struct({
  category: Schema.Literals(["billing", "bug", "account", "feature_request", "shipping", "other"]).annotate({
    description: "the team that should handle the ticket"
  }),
  priority: Schema.Literals(["low", "medium", "high", "urgent"]),
  summary: Schema.String.annotate({ description: "one short sentence" })
}).annotate({ title: "Triage" })

/** the model per provider: `offpeak run examples/triage/pipeline.ts --provider anthropic` */
const MODELS: Record<string, string> = {
  openai: "gpt-4o-mini",
  anthropic: "claude-haiku-4-5",
  gemini: "gemini-2.5-flash",
  vertex: "gemini-2.5-flash"
}

const SYSTEM = [
  "You triage customer support tickets.",
  "Pick the category of the team that should handle the ticket and a priority:",
  "urgent when a customer is blocked, high for errors and money, medium for the rest, low for wishes.",
  "Summarise the ticket in one short sentence."
].join(" ")

export default Pipeline.make({
  name: "triage",
  source: Csv.source({ path: fileURLToPath(new URL("./tickets.csv", import.meta.url)), schema: Ticket, name: "tickets.csv", key: "id" }),
  key: (ticket) => ticket.id,
  request: (ticket, { provider }) =>
    Request.chat({
      model: MODELS[provider] ?? "gpt-4o-mini",
      system: SYSTEM,
      prompt: `Subject: ${ticket.subject}\n\n${ticket.body}`,
      maxTokens: 200,
      temperature: 0
    }),
  output: Triage,
  outputName: "triage",
  row: (result) => ({ id: result.key, customer: result.record.customer, ...result.output }),
  sink: Jsonl.sink({ dir: "out/triage" }),
  deadLetter: Jsonl.sink({ dir: "out/triage/dead-letter" }),
  batch: { maxRequests: 50, maxInFlight: 3 }
})
