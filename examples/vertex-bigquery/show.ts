/**
 * What the Vertex-from-BigQuery example landed: the rows of
 * `shop.product_categories` by category, and a few of them beside their
 * product. A summary query, not the table: a few rows come back.
 *
 *   node examples/vertex-bigquery/show.ts [--state-dir .offpeak]     (in this repository: scripts/with-node.sh node …)
 *
 * With `GOOGLE_CLOUD_PROJECT` set it asks BigQuery itself; else it opens the
 * local BigQuery emulator's files the run left in
 * `<state-dir>/emulator/vertex/bigquery/` (not while a run holds them). Prints
 * one JSON line with the figures after the table, for scripts.
 */
import { Emulator } from "@offpeak/io/bigquery"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Example from "./pushdown.ts"

const args = process.argv.slice(2)
const at = args.indexOf("--state-dir")
const stateDir = path.resolve(at >= 0 && args[at + 1] !== undefined ? args[at + 1]! : ".offpeak")

const program = Effect.gen(function*() {
  if ((process.env.GOOGLE_CLOUD_PROJECT ?? "") === "") {
    const dir = path.join(stateDir, "emulator", "vertex", "bigquery")
    if (!fs.existsSync(dir)) return yield* Effect.fail(new Error(`no local BigQuery state in ${dir}: run the example first`))
    const local = yield* Emulator.serve({ dir })
    process.env.GOOGLE_CLOUD_PROJECT = "offpeak-local"
    process.env.BIGQUERY_EMULATOR_HOST = local.url
  }
  const bq = Example.client()
  const query = <A>(sql: string) => Effect.promise(async () => (await bq.query({ query: sql }))[0] as Array<A>)
  const [totals] = yield* query<{ n: number; keys: number }>(
    `SELECT COUNT(*) AS n, COUNT(DISTINCT sku) AS keys FROM ${Example.TABLES.target}`
  )
  const byCategory = yield* query<{ category: string; n: number }>(
    `SELECT category, COUNT(*) AS n FROM ${Example.TABLES.target} GROUP BY category ORDER BY n DESC, category`
  )
  const sample = yield* query<{ sku: number; title: string; category: string; audience: string; summary: string }>(
    `SELECT c.sku, p.title, c.category, c.audience, c.summary FROM ${Example.TABLES.target} AS c
     JOIN ${Example.TABLES.source} AS p ON c.sku = p.sku ORDER BY c.sku LIMIT 3`
  )
  console.log(`${Example.TABLES.target}: ${totals!.n.toLocaleString("en-US")} rows, ${totals!.keys.toLocaleString("en-US")} products`)
  console.log(`by category: ${byCategory.map((r) => `${r.category} ${r.n}`).join(", ")}`)
  for (const r of sample) console.log(`  ${r.sku} ${r.title} → ${r.category} (${r.audience}): ${r.summary}`)
  console.log(JSON.stringify({ rows: totals!.n, keys: totals!.keys, byCategory: Object.fromEntries(byCategory.map((r) => [r.category, r.n])) }))
})

await Effect.runPromise(Effect.scoped(program))
