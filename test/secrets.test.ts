/**
 * Secrets never printed or stored: a base URL with credentials, and a provider error body that echoes the API key,
 * reach neither stderr/stdout nor the ledger's run message.
 */
import { afterAll, describe, expect, it } from "vitest"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as path from "node:path"
import { killAll, query, repo, runCli, tmpDir, writeTickets } from "./support/files.ts"

const fixture = path.join(repo, "test/fixtures/tickets.pipeline.ts")
afterAll(killAll)

const KEY = "sk-proj-Zx9QeS3cr3tKey0000"
const PASSWORD = "basicAuthPa55word"

describe("secrets", () => {
  it("a base URL with credentials and an error body echoing the key are masked on the terminal and in the ledger", async () => {
    // a host that refuses every call with the key in its error body, as a real API may
    const server = http.createServer((req, res) => {
      req.resume()
      req.on("end", () => {
        res.writeHead(401, { "content-type": "application/json" })
        res.end(JSON.stringify({ error: { message: `Incorrect API key provided: ${KEY}.`, type: "invalid_request_error" } }))
      })
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const port = (server.address() as AddressInfo).port
    try {
      const dir = tmpDir("secrets")
      const input = path.join(dir, "tickets.csv")
      writeTickets(input, 20, 3)
      const env = (baseUrl: string) => ({
        OPENAI_API_KEY: KEY,
        OPENAI_BASE_URL: baseUrl,
        OFFPEAK_TEST_INPUT: input,
        OFFPEAK_TEST_OUT: path.join(dir, "out"),
        OFFPEAK_TEST_MAX_REQUESTS: "5"
      })
      // credentials in the base URL: refused at once with the URL masked (fetch cannot send them)
      const withCredentials = await runCli(["run", fixture, "--state-dir", path.join(dir, "state")], {
        cwd: dir,
        env: env(`http://offpeak:${PASSWORD}@127.0.0.1:${port}/v1`)
      })
      expect(withCredentials.code).not.toBe(0)
      expect(withCredentials.stderr).toMatch(/OPENAI_BASE_URL \(http:\/\/offpeak:\*\*\*@127\.0\.0\.1:\d+\/v1\) holds credentials/)
      expect(withCredentials.stdout + withCredentials.stderr).not.toContain(PASSWORD)
      expect(withCredentials.stdout + withCredentials.stderr).not.toContain(KEY)
      // an answer that echoes the key: masked on the terminal and in the ledger
      const run = await runCli(["run", fixture, "--state-dir", path.join(dir, "state")], {
        cwd: dir,
        env: env(`http://127.0.0.1:${port}/v1`)
      })
      const printed = run.stdout + run.stderr
      expect(run.code).not.toBe(0)
      expect(printed).toMatch(/Incorrect API key provided: \*\*\*/)
      expect(printed).not.toContain(KEY)
      const [stored] = query<{ message: string }>(path.join(dir, "state", "state.db"), "SELECT message FROM offpeak_runs")
      expect(stored!.message).toMatch(/Incorrect API key provided: \*\*\*/)
      expect(stored!.message).not.toContain(KEY)
      const status = await runCli(["status", "--state-dir", path.join(dir, "state"), "--json"], { cwd: dir })
      expect(status.stdout).not.toContain(KEY)
    } finally {
      server.close()
    }
  }, 120_000)
})
