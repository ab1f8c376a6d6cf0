/** What the emulator must answer, computed independently of the pipeline. */
import * as Request from "@offpeak/core/Request"
import { Engine } from "@offpeak/providers/local"
import { OpenAiBatch } from "@offpeak/providers/openai"
import type { ChatCompletionCreateParamsNonStreaming } from "openai/resources/chat/completions"
import * as Fixture from "../fixtures/tickets.pipeline.ts"

/** what the emulator must have answered for this ticket: the engine run on the exact body the adapter sent */
export const expectedLabel = (ticket: Fixture.Ticket): unknown => {
  const request = Request.withOutput(Fixture.request(ticket), { name: "label", schema: Fixture.Label })
  const body = OpenAiBatch.requestLine(request, "x").body as ChatCompletionCreateParamsNonStreaming
  const format = body.response_format as { json_schema: { schema: unknown } }
  const answer = Engine.chat({
    model: body.model,
    messages: body.messages.map((m) => ({ role: m.role, content: m.content as string })),
    maxTokens: body.max_completion_tokens ?? undefined,
    jsonSchema: format.json_schema.schema
  })
  return JSON.parse(answer.text)
}

