import { Result, Schema } from "effect"
import { describe, expect, it } from "vitest"
import { decoder, schemaReason } from "../reason.ts"

describe("schemaReason", () => {
  it("names the field and shows a bigint (a Postgres bigint column) as 5n instead of throwing", () => {
    const decode = decoder(Schema.Struct({ id: Schema.Number, tags: Schema.Array(Schema.String) }))
    const input = { id: 5n, tags: ["a", 7n] }
    const result = decode(input)
    expect(Result.isFailure(result)).toBe(true)
    const reason = schemaReason((result as Result.Failure<unknown, Schema.SchemaError>).failure, input)
    expect(reason).toMatch(/field "id": Expected number, got 5n/)
    expect(reason).toMatch(/field "tags\[1\]": Expected string, got 7n/)
  })
})
