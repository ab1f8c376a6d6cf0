/**
 * The JSON Schema each provider family is sent for a structured output, as the
 * adapters render it (OpenAI: `toCodecOpenAI`, strict; Anthropic: the forced
 * tool's `input_schema`, a non-object root wrapped in `{ value }`; Gemini: the
 * Anthropic rendering, which its `responseJsonSchema` is derived from), as JSON
 * text. Cached per schema object: a pipeline renders it once, not once per row.
 */
import type { Schema } from "effect"
import * as AnthropicStructuredOutput from "effect/ai/AnthropicStructuredOutput"
import * as OpenAiStructuredOutput from "effect/ai/OpenAiStructuredOutput"

/** the provider families whose token counts differ */
export type Family = "openai" | "anthropic" | "google"

const rendered = new WeakMap<object, Map<Family, string>>()

const render = (schema: Schema.Codec<unknown, any>, family: Family): string => {
  if (family === "openai") {
    const { jsonSchema } = OpenAiStructuredOutput.toCodecOpenAI(schema as any) as { readonly jsonSchema: unknown }
    return JSON.stringify(jsonSchema)
  }
  const { jsonSchema } = AnthropicStructuredOutput.toCodecAnthropic(schema as any) as {
    readonly jsonSchema: Record<string, unknown>
  }
  if (jsonSchema.type === "object") return JSON.stringify(jsonSchema)
  const { $defs, ...root } = jsonSchema
  return JSON.stringify({
    type: "object",
    properties: { value: root },
    required: ["value"],
    additionalProperties: false,
    ...($defs !== undefined ? { $defs } : {})
  })
}

/** the JSON text of the schema `family` is sent for `schema` */
export const schemaText = (schema: Schema.Codec<unknown, any>, family: Family): string => {
  let byFamily = rendered.get(schema)
  if (byFamily === undefined) {
    byFamily = new Map()
    rendered.set(schema, byFamily)
  }
  let text = byFamily.get(family)
  if (text === undefined) {
    text = render(schema, family)
    byFamily.set(family, text)
  }
  return text
}
