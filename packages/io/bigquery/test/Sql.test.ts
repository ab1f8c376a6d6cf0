/**
 * The emulator's GoogleSQL → DuckDB translation: what it rewrites, and that
 * what it does not support fails naming the construct.
 */
import { describe, expect, it } from "vitest"
import { SqlError, translate } from "../internal/emulatorSql.ts"

const one = (sql: string) => {
  const t = translate(sql)
  expect(t.statements).toHaveLength(1)
  return t.statements[0]!
}

const refusal = (sql: string) => {
  try {
    translate(sql)
  } catch (e) {
    if (e instanceof SqlError) return e.message
    throw e
  }
  return "translated"
}

describe("GoogleSQL → DuckDB", () => {
  it("names: backticked paths split, unquoted dashed projects, every identifier quoted (DuckDB reserves `at`, `value`, …)", () => {
    expect(one("SELECT id, at FROM `my-proj.ds.t` AS x JOIN ds.u ON x.id = u.id").sql).toBe(
      `SELECT "id", "at" FROM "my-proj"."ds"."t" AS "x" JOIN "ds"."u" ON "x"."id" = "u"."id"`
    )
    expect(one("SELECT * FROM my-proj.ds.t").sql).toBe(`SELECT * FROM "my-proj"."ds"."t"`)
    expect(one("SELECT * FROM `p`.`ds`.`t`").sql).toBe(`SELECT * FROM "p"."ds"."t"`)
  })

  it("literals: GoogleSQL strings (double quotes, escapes, raw, triple-quoted) and bytes; float literals as FLOAT64", () => {
    expect(one(`SELECT "it's", 'a\\nb', r'\\d+', """multi\nline""", b'\\x00A'`).sql).toBe(
      `SELECT 'it''s', 'a\nb', '\\d+', 'multi\nline', '\\x00\\x41'::BLOB`
    )
    expect(one("SELECT 1.5, 2, 0x10, 1e3").sql).toBe("SELECT CAST(1.5 AS DOUBLE), 2, 16, CAST(1e3 AS DOUBLE)")
  })

  it("parameters, types, typed literals, STRUCT and ARRAY constructors, EXCEPT, IN UNNEST", () => {
    const t = translate("SELECT * EXCEPT (secret) FROM ds.t WHERE id > @min AND tag IN UNNEST(@tags) AND ts < TIMESTAMP '2024-01-01 00:00:00 UTC'")
    expect(t.params).toEqual(["min", "tags"])
    expect(t.statements[0]!.sql).toBe(
      `SELECT * EXCLUDE ("secret") FROM "ds"."t" WHERE "id" > $min AND "tag" IN (SELECT unnest($tags)) AND "ts" < CAST('2024-01-01 00:00:00 UTC' AS TIMESTAMPTZ)`
    )
    expect(one("SELECT CAST(x AS NUMERIC), SAFE_CAST(y AS ARRAY<STRUCT<a INT64, b BIGNUMERIC>>), STRUCT(1 AS a, t.b), ARRAY<INT64>[1, 2]").sql).toBe(
      `SELECT CAST("x" AS DECIMAL(38,9)), TRY_CAST("y" AS STRUCT("a" BIGINT, "b" DECIMAL(38,9))[]), struct_pack("a" := 1, "b" := "t"."b"), CAST([1, 2] AS BIGINT[])`
    )
  })

  it("statements: INSERT / DELETE without INTO / FROM, MERGE with its at-most-one-match check, CREATE TABLE with options dropped", () => {
    expect(one("INSERT ds.t (a) VALUES (1)").sql).toBe(`INSERT INTO "ds"."t" ("a") VALUES (1)`)
    expect(one("DELETE ds.t WHERE a = 1")).toMatchObject({ kind: "DELETE", sql: `DELETE FROM "ds"."t" WHERE "a" = 1` })
    const merge = one("MERGE ds.target T USING ds.staging S ON T.id = S.id WHEN MATCHED THEN UPDATE SET v = S.v WHEN NOT MATCHED THEN INSERT (id, v) VALUES (S.id, S.v)")
    expect(merge.sql).toBe(
      `MERGE INTO "ds"."target" AS "T" USING "ds"."staging" AS "S" ON "T"."id" = "S"."id" WHEN MATCHED THEN UPDATE SET "v" = "S"."v" WHEN NOT MATCHED THEN INSERT ("id", "v") VALUES ("S"."id", "S"."v")`
    )
    expect(merge.mergeCheck).toBe(`SELECT 1 FROM "ds"."target" AS "T" JOIN "ds"."staging" AS "S" ON "T"."id" = "S"."id" GROUP BY "T".rowid HAVING count(*) > 1 LIMIT 1`)
    expect(one("CREATE OR REPLACE TABLE ds.x (id INT64 NOT NULL OPTIONS(description='k'), e ARRAY<FLOAT64>) PARTITION BY DATE(ts) CLUSTER BY id OPTIONS(x=1)")).toEqual({
      kind: "CREATE_TABLE",
      sql: `CREATE OR REPLACE TABLE "ds"."x" ("id" BIGINT NOT NULL, "e" DOUBLE[])`
    })
    expect(translate("UPDATE ds.t SET a = 1 WHERE TRUE; SELECT 1").statements.map((s) => s.kind)).toEqual(["UPDATE", "SELECT"])
  })

  it("functions with other names or other semantics in DuckDB are rewritten to GoogleSQL's semantics", () => {
    expect(one("SELECT CONCAT(a, b), IFNULL(a, b), COUNTIF(x > 1), GREATEST(a, b)").sql).toBe(
      `SELECT (("a") || ("b")), coalesce("a", "b"), count_if("x" > 1), (CASE WHEN ("a") IS NULL OR ("b") IS NULL THEN NULL ELSE greatest("a", "b") END)`
    )
    expect(one("SELECT DATE_ADD(d, INTERVAL 2 DAY), TIMESTAMP_DIFF(a, b, MINUTE), EXTRACT(DAYOFWEEK FROM d), arr[OFFSET(0)], arr[ORDINAL(1)]").sql).toBe(
      `SELECT CAST(("d" + (INTERVAL (2) DAY)) AS DATE), date_sub('minute', "b", "a"), (EXTRACT(dow FROM "d") + 1), "arr"[bq_offset(0)], "arr"[bq_ordinal(1)]`
    )
  })

  it("anything else fails naming the construct", () => {
    const cases: Record<string, RegExp> = {
      "SELECT FORMAT('%d', x)": /the function FORMAT\(\) is not supported/,
      "SELECT * FROM t FOR SYSTEM_TIME AS OF TIMESTAMP '2024-01-01'": /FOR SYSTEM_TIME AS OF \(time travel\)/,
      "SELECT ?": /positional query parameters/,
      "SELECT @@project_id": /system variables/,
      "DECLARE x INT64": /DECLARE statements are not supported/,
      "SELECT AS STRUCT 1 AS a": /SELECT AS STRUCT/,
      "SELECT * FROM UNNEST([1]) AS x WITH OFFSET": /WITH OFFSET/,
      "SELECT SAFE.DIVIDE(1, 0)": /SAFE\. function prefix/,
      "SELECT CAST(x AS GEOGRAPHY)": /the type GEOGRAPHY is not supported/,
      "SELECT DATE_DIFF(a, b, MONTH)": /DATE_DIFF: the emulator supports the date parts DAY/,
      "SELECT 'unterminated": /unterminated string literal/,
      "MERGE t USING s ON t.id = s.id WHEN NOT MATCHED THEN INSERT ROW": /INSERT ROW/
    }
    for (const [sql, message] of Object.entries(cases)) expect(refusal(sql), sql).toMatch(message)
  })
})
