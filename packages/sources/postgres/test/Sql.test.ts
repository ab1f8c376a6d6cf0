import { assert, describe, it } from "@effect/vitest"
import * as Sql from "../internal/sql.ts"
import * as Table from "../internal/table.ts"

describe("Postgres SQL text", () => {
  it("quotes identifiers, doubling quotes", () => {
    assert.strictEqual(Sql.quoteIdent("id"), "\"id\"")
    assert.strictEqual(Sql.quoteIdent("we\"ird"), "\"we\"\"ird\"")
    assert.strictEqual(Sql.quoteIdent("\"; DROP TABLE x; --"), "\"\"\"; DROP TABLE x; --\"")
    assert.strictEqual(Sql.qualified("my schema", "select"), "\"my schema\".\"select\"")
    assert.strictEqual(Sql.qualified(undefined, "t"), "\"t\"")
  })

  it("refuses names PostgreSQL would cut or cannot hold", () => {
    assert.isUndefined(Sql.identifierProblem("ünïcødé 名前"))
    assert.match(Sql.identifierProblem("")!, /empty/)
    assert.match(Sql.identifierProblem("a\u0000b")!, /NUL/)
    assert.match(Sql.identifierProblem("x".repeat(64))!, /64 bytes long; PostgreSQL cuts names at 63/)
    assert.match(Sql.identifierProblem("é".repeat(32))!, /64 bytes/)
  })

  it("array literals escape quotes and backslashes and nest", () => {
    assert.strictEqual(Sql.arrayText(["a", "b \"c\"", "d\\e", null, ""]), "{\"a\",\"b \\\"c\\\"\",\"d\\\\e\",NULL,\"\"}")
    assert.strictEqual(Sql.arrayText([[1, 2], [3, 4]]), "{{\"1\",\"2\"},{\"3\",\"4\"}}")
    assert.strictEqual(Sql.arrayText([]), "{}")
  })

  it("vectors: pgvector's text form and real[]; non-numbers refused", () => {
    assert.strictEqual(Sql.vectorText([1, 0.5, -2.25]), "[1,0.5,-2.25]")
    assert.strictEqual(Sql.realArrayText([1, 0.5]), "{1,0.5}")
    assert.deepStrictEqual(Sql.vectorNumbers(new Float32Array([0.5, 1])), [0.5, 1])
    assert.match(Sql.vectorNumbers([1, "2"]) as string, /expected numbers, got "2"/)
    assert.match(Sql.vectorNumbers("[1,2]") as string, /expected an array of numbers, got a string/)
  })

  it("the checkpoint wraps the query, orders by the column and filters after a parameter", () => {
    assert.strictEqual(Sql.sourceQuery({ query: "SELECT 1;  \n", hasAfter: false }), "SELECT 1")
    assert.strictEqual(
      Sql.sourceQuery({ query: "SELECT * FROM t;", checkpoint: "up\"d", hasAfter: true }),
      "SELECT offpeak_q.*, (offpeak_q.\"up\"\"d\")::text AS __offpeak_checkpoint FROM (\nSELECT * FROM t\n) AS offpeak_q" +
        " WHERE offpeak_q.\"up\"\"d\" > $1 ORDER BY offpeak_q.\"up\"\"d\""
    )
  })

  it("statements stay under 65,535 parameters and 1000 rows", () => {
    const width = 70
    const columns = Array.from({ length: width }, (_, i) => `c${i}`)
    const plan = Table.plan(
      { schema: undefined, table: "t", keys: ["c0"], columns, vectorColumns: [], createTable: undefined, mode: "upsert" },
      columns.map((name) => ({ name, type: "text", typname: "text", category: "S", element: null })),
      null
    ) as Table.Plan
    const rows = Array.from({ length: 2500 }, (_, r) => columns.map((c) => `${c}-${r}`))
    const statements = Table.statements(plan, rows)
    assert.deepStrictEqual(statements.map((s) => s.params.length / width), [936, 936, 628])
    for (const s of statements) assert.isAtMost(s.params.length, Sql.MAX_PARAMETERS)
    assert.include(statements[0]!.sql, "$65520)")
    assert.include(statements[0]!.sql, "ON CONFLICT (\"c0\") DO UPDATE SET \"c1\" = EXCLUDED.\"c1\"")
    const narrow = Table.statements({ ...plan, columns: ["c0"] }, Array.from({ length: 2001 }, (_, r) => [`${r}`]))
    assert.deepStrictEqual(narrow.map((s) => s.params.length), [1000, 1000, 1])
  })

  it("update mode: UPDATE … FROM (VALUES …) with each placeholder cast to its column's type", () => {
    const plan = Table.plan(
      { schema: undefined, table: "docs", keys: ["id"], columns: ["id", "emb"], vectorColumns: ["emb"], createTable: undefined, mode: "update" },
      [
        { name: "id", type: "integer", typname: "int4", category: "N", element: null },
        { name: "title", type: "text", typname: "text", category: "S", element: null },
        { name: "emb", type: "real[]", typname: "_float4", category: "A", element: "float4" }
      ],
      null
    ) as Table.Plan
    const [statement] = Table.statements(plan, [[1, "{1,2}"], [2, "{3,4}"]])
    assert.strictEqual(
      statement!.sql,
      "UPDATE \"docs\" AS \"t\" SET \"emb\" = \"v\".\"emb\" FROM (VALUES ($1::integer, $2::real[]), ($3::integer, $4::real[]))" +
        " AS \"v\" (\"id\", \"emb\") WHERE \"t\".\"id\" = \"v\".\"id\""
    )
  })
})
