import { assert, describe, it } from "@effect/vitest"
import * as Checkpoint from "../internal/checkpoint.ts"
import * as Refusal from "../internal/refusal.ts"
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

  it("keyset pages: the query wrapped, (column, key) row comparisons as parameters, ordered by column then key", () => {
    const keyset = { query: "SELECT * FROM t;  \n", column: "up\"d", key: "select" }
    const q = "(\nSELECT * FROM t\n) AS offpeak_q"
    const cols = "offpeak_q.\"up\"\"d\", offpeak_q.\"select\""
    assert.deepStrictEqual(Sql.keysetPage(keyset, {}, 100), {
      sql: `SELECT offpeak_q.*, (offpeak_q."up""d")::text AS __offpeak_checkpoint, (offpeak_q."select")::text AS __offpeak_key FROM ${q} ORDER BY ${cols} LIMIT 100`,
      params: []
    })
    const both = Sql.keysetPage(keyset, {
      after: { _tag: "Row", column: "2026-01-01 00:00:00+00", key: "'); DROP TABLE t; --" },
      upTo: { _tag: "Row", column: "2026-02-01 00:00:00+00", key: "z" }
    }, 5)
    assert.include(both.sql, ` WHERE (${cols}) > ($1, $2) AND (${cols}) <= ($3, $4) ORDER BY`)
    assert.deepStrictEqual(both.params, ["2026-01-01 00:00:00+00", "'); DROP TABLE t; --", "2026-02-01 00:00:00+00", "z"])
    // a plain value (an old checkpoint, a number, a Date) compares the column alone
    const plain = Sql.keysetPage(keyset, { after: { _tag: "Value", value: new Date("2026-01-01T00:00:00Z") } }, 5)
    assert.include(plain.sql, " WHERE offpeak_q.\"up\"\"d\" > $1 ORDER BY")
    assert.deepStrictEqual(plain.params, ["2026-01-01T00:00:00.000Z"])
    assert.deepStrictEqual(Sql.keysetCount(keyset, { upTo: { _tag: "Value", value: 7 } }), {
      sql: `SELECT count(*) AS n FROM ${q} WHERE offpeak_q."up""d" <= $1`,
      params: [7]
    })
    assert.strictEqual(
      Sql.keysetHigh(keyset),
      `SELECT (offpeak_q."up""d")::text AS col, (offpeak_q."select")::text AS key FROM ${q} ORDER BY offpeak_q."up""d" DESC, offpeak_q."select" DESC LIMIT 1`
    )
    assert.include(Sql.keysetNulls(keyset), `WHERE offpeak_q."up""d" IS NULL OR offpeak_q."select" IS NULL LIMIT 1`)
    assert.strictEqual(Sql.countQuery("VALUES (1), (2);"), "SELECT count(*) AS n FROM (\nVALUES (1), (2)\n) AS offpeak_q")
  })

  it("checkpoints: (column, key) as JSON; anything else is an old plain value", () => {
    const cp = Checkpoint.encode("2026-01-01 00:00:00.000003+00", "k\"1")
    assert.strictEqual(cp, "{\"col\":\"2026-01-01 00:00:00.000003+00\",\"key\":\"k\\\"1\"}")
    assert.deepStrictEqual(Checkpoint.decode(cp), { _tag: "Row", column: "2026-01-01 00:00:00.000003+00", key: "k\"1" })
    for (const old of ["42", "2026-11-26 10:00:00.123456+00", "{a,b}", "{\"col\":1,\"key\":\"x\"}", "{\"col\":\"a\"}", "{not json", 42, 42n]) {
      assert.deepStrictEqual(Checkpoint.decode(old), { _tag: "Value", value: old })
    }
  })

  it("pre-checks: lengths as PostgreSQL counts them (code points; excess spaces are cut, not refused)", () => {
    const varchar = { name: "v", type: "character varying(5)", base: "character varying", typname: "varchar", category: "S", element: null }
    assert.strictEqual(Table.lengthOf(varchar), 5)
    assert.strictEqual(Table.lengthOf({ ...varchar, type: "character(3)", typname: "bpchar" }), 3)
    assert.isUndefined(Table.lengthOf({ ...varchar, type: "character varying", typname: "varchar" }))
    assert.isUndefined(Table.lengthOf({ ...varchar, type: "text", typname: "text" }))
    const type = "character varying(5)"
    assert.isUndefined(Table.lengthProblem("abcde", 5, type))
    assert.isUndefined(Table.lengthProblem("🙂🙂🙂🙂🙂", 5, type)) // 10 UTF-16 units, 5 characters
    assert.isUndefined(Table.lengthProblem("abc     ", 5, type))
    assert.strictEqual(Table.lengthProblem("abcdef", 5, type), "the value is 6 characters long; the column is character varying(5)")
    assert.strictEqual(Table.lengthProblem("abcde  x", 5, type), "the value is 8 characters long; the column is character varying(5)")
    const encode = Table.encoderFor(varchar, undefined)
    assert.deepStrictEqual(encode("abc"), { ok: "abc" })
    assert.deepStrictEqual(encode(123456), { error: "the value is 6 characters long; the column is character varying(5)" })
    assert.match((encode("a\u0000b") as { error: string }).error, /NUL character \(\\u0000\) at offset 1/)
    const jsonb = Table.encoderFor({ ...varchar, type: "jsonb", base: "jsonb", typname: "jsonb" }, undefined)
    assert.match((jsonb({ deep: [{ ["k\u0000"]: 1 }] }) as { error: string }).error, /jsonb cannot store/)
    assert.deepStrictEqual(jsonb({ a: "\\u0000 is six characters here" }), { ok: "{\"a\":\"\\\\u0000 is six characters here\"}" })
    const json = Table.encoderFor({ ...varchar, type: "json", base: "json", typname: "json" }, undefined)
    assert.deepStrictEqual(json({ a: "x\u0000" }), { ok: "{\"a\":\"x\\u0000\"}" })
  })

  it("refusals: SQLSTATE classes 22 and 23, 21000, 54000, 42804 on a parameter; the parameter a bind error names", () => {
    for (const code of ["22021", "22001", "22P02", "22P05", "22000", "23502", "23505", "23514", "21000", "54000"]) {
      assert.isTrue(Refusal.isRefusal({ code }), code)
    }
    for (const code of [undefined, "08006", "42P01", "42703", "57P01", "40001", "53300", "42804"]) {
      assert.isFalse(Refusal.isRefusal({ code }), code)
    }
    assert.isTrue(Refusal.isRefusal({ code: "42804", where: "unnamed portal parameter $2" }))
    assert.strictEqual(Refusal.parameterOf("unnamed portal parameter $4 = '...'"), 4)
    assert.strictEqual(Refusal.parameterOf("JSON data, line 1: {\nunnamed portal parameter $12"), 12)
    assert.isUndefined(Refusal.parameterOf(undefined))
    assert.isUndefined(Refusal.parameterOf("SQL function \"f\" statement 1"))
  })

  it("statements stay under 65,535 parameters and 1000 rows", () => {
    const width = 70
    const columns = Array.from({ length: width }, (_, i) => `c${i}`)
    const plan = Table.plan(
      { schema: undefined, table: "t", keys: ["c0"], columns, vectorColumns: [], createTable: undefined, mode: "upsert" },
      columns.map((name) => ({ name, type: "text", base: "text", typname: "text", category: "S", element: null })),
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
    assert.deepStrictEqual(narrow.map((s) => [s.first, s.rows]), [[0, 1000], [1000, 1000], [2000, 1]])
  })

  it("update mode: UPDATE … FROM (VALUES …) with each placeholder cast to its column's type without modifier", () => {
    const plan = Table.plan(
      { schema: undefined, table: "docs", keys: ["id"], columns: ["id", "emb"], vectorColumns: ["emb"], createTable: undefined, mode: "update" },
      [
        { name: "id", type: "integer", base: "integer", typname: "int4", category: "N", element: null },
        { name: "title", type: "text", base: "text", typname: "text", category: "S", element: null },
        { name: "emb", type: "real[]", base: "real[]", typname: "_float4", category: "A", element: "float4" }
      ],
      null
    ) as Table.Plan
    const [statement] = Table.statements(plan, [[1, "{1,2}"], [2, "{3,4}"]])
    assert.deepStrictEqual([statement!.first, statement!.rows], [0, 2])
    // `::character varying(5)` would cut a longer value: the cast names the type alone, the assignment checks the length
    const short = Table.plan(
      { schema: undefined, table: "t", keys: ["id"], columns: ["id", "v"], vectorColumns: [], createTable: undefined, mode: "update" },
      [
        { name: "id", type: "integer", base: "integer", typname: "int4", category: "N", element: null },
        { name: "v", type: "character varying(5)[]", base: "character varying[]", typname: "_varchar", category: "A", element: "varchar" }
      ],
      null
    ) as Table.Plan
    assert.include(Table.statements(short, [[1, "{abcdefgh}"]])[0]!.sql, "($1::integer, $2::character varying[])")
    assert.strictEqual(
      statement!.sql,
      "UPDATE \"docs\" AS \"t\" SET \"emb\" = \"v\".\"emb\" FROM (VALUES ($1::integer, $2::real[]), ($3::integer, $4::real[]))" +
        " AS \"v\" (\"id\", \"emb\") WHERE \"t\".\"id\" = \"v\".\"id\""
    )
  })
})
