/**
 * What a user sees in a real terminal (tmux, recorded with `capture-pane`): a run through retries, an expired batch
 * and a 429 storm shows the progress bar and a line for each event, the bar never garbled by them and gone once the
 * summary is printed; a wrong base URL names the refused host within 10 seconds, for every provider.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { bin, binaryNode, killAll, repo, startCli, tmpDir, writeTickets } from "./support/files.ts"

const fixture = path.join(repo, "test/fixtures/tickets.pipeline.ts")
const socket = `offpeak-test-${process.pid}`
const tmux = (...args: ReadonlyArray<string>) => execFileSync("tmux", ["-L", socket, ...args], { encoding: "utf8" })

afterAll(() => {
  killAll()
  try {
    tmux("kill-server")
  } catch {
    // no server left
  }
})

/** a port nothing listens on */
const closedPort = async (): Promise<number> => {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * Starts `offpeak <args>` in a tmux session of `columns` x 50 (a UTF-8 terminal), with `env`; the pane stays after
 * the command ends, with `EXIT=<code>` printed.
 */
const session = (name: string, dir: string, args: ReadonlyArray<string>, env: Record<string, string | undefined>, columns = 150) => {
  const script = path.join(dir, `${name}.sh`)
  const exports = Object.entries({ LANG: "C.UTF-8", TERM: "xterm-256color", NO_COLOR: undefined, ...env })
    .map(([k, v]) => (v === undefined ? `unset ${k}` : `export ${k}='${v.replace(/'/g, `'\\''`)}'`))
  fs.writeFileSync(
    script,
    [
      "#!/bin/sh",
      // Ctrl-C reaches the command, and this script goes on to print its exit code
      "trap 'true' INT",
      ...exports,
      `cd '${dir}'`,
      `${Object.entries(binaryNode.env).map(([k, v]) => `${k}=${v}`).join(" ")} '${process.execPath}' ${binaryNode.args.join(" ")} '${bin}' ${args.map((a) => `'${a}'`).join(" ")}`,
      `echo "EXIT=$?"`,
      "sleep 600"
    ].join("\n") + "\n",
    { mode: 0o755 }
  )
  // the pane stays when the script ends, so what it printed can still be read
  tmux("new-session", "-d", "-s", name, "-x", String(columns), "-y", "50", script, ";", "set-option", "-t", name, "remain-on-exit", "on")
  return {
    /** the screen as it is now */
    screen: () => tmux("capture-pane", "-p", "-J", "-t", name),
    /** everything the pane printed, scrolled off or not */
    history: () => tmux("capture-pane", "-p", "-J", "-S", "-", "-E", "-", "-t", name),
    keys: (...keys: ReadonlyArray<string>) => tmux("send-keys", "-t", name, ...keys),
    kill: () => tmux("kill-session", "-t", name)
  }
}

/** the two status lines: the bar with its figures, and batches with their states */
const BAR = /^\s*(~?\s*)(\d+)% \[[█▒░]+\] [\d,]+\/~?[\d,]+ rows · (?:[\d.,]+|—) rows\/s · \d+:\d\d elapsed · ETA (?:~?[\d:]+|—)$/
const BATCHES = /^batches .*· succeeded [\d,]+ · failed [\d,]+/

describe("the terminal", () => {
  it("a run with retries, an expired batch and a 429 storm: the bar, a line per event, the summary", async () => {
    const dir = tmpDir("tty-run")
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, 1_200, 21)
    const knobs = {
      // 300 lines at 100 a second take 3 s: past a 2.5 s completion window, the batch expires with what it answered
      linesPerSecond: 100,
      completionWindowMs: 2_500,
      lineFailures: [{ status: 500, rate: 0.04 }],
      // the first creates are refused with 429s
      endpointFaults: [{ endpoint: "batches.create", status: 429, times: 3, retryAfter: 0 }],
      seed: 5
    }
    const started = Date.now()
    const s = session("run", dir, ["run", fixture, "--state-dir", "st"], {
      OPENAI_API_KEY: undefined,
      OPENAI_BASE_URL: undefined,
      OFFPEAK_TEST_INPUT: input,
      OFFPEAK_TEST_OUT: path.join(dir, "out"),
      OFFPEAK_TEST_MAX_REQUESTS: "300",
      OFFPEAK_TEST_IN_FLIGHT: "2",
      OFFPEAK_EMULATOR_KNOBS: JSON.stringify(knobs)
    })
    const frames: Array<string> = []
    let firstBar: number | undefined
    while (Date.now() - started < 150_000) {
      const screen = s.screen()
      if (frames.at(-1) !== screen) frames.push(screen)
      if (firstBar === undefined && screen.split("\n").some((l) => BAR.test(l))) firstBar = Date.now() - started
      if (/EXIT=\d+/.test(screen)) break
      await sleep(150)
    }
    const history = s.history()
    s.kill()
    const lines = history.split("\n").filter((l) => l.trim() !== "")
    console.log(history.trimEnd())
    // a frame with the bar at work, as the user saw it
    const working = frames.find((f) => f.split("\n").some((l) => BAR.test(l) && !/ 0% /.test(l)))
    console.log(`--- a frame during the run:\n${working?.trimEnd()}`)
    const percents = frames.flatMap((f) => f.split("\n").flatMap((l) => BAR.exec(l)?.[2] ?? [])).map(Number)
    console.log(
      `${frames.length} distinct frames in ${Date.now() - started} ms; first bar after ${firstBar} ms; percents seen: ` +
        [...new Set(percents)].join(", ")
    )
    expect(history).toMatch(/EXIT=0/)
    // the bar was there, with both its lines, and it moved forward only
    expect(firstBar).toBeDefined()
    expect(frames.some((f) => f.split("\n").some((l) => BATCHES.test(l)))).toBe(true)
    expect(new Set(percents).size).toBeGreaterThanOrEqual(2)
    for (let i = 1; i < percents.length; i++) expect(percents[i]).toBeGreaterThanOrEqual(percents[i - 1]!)
    // a line for each event
    expect(history).toMatch(/\d\d:\d\d:\d\d rate limited \(429, the 1st time\) on openai batches\.create: backing off [\d.]+ m?s/)
    expect(history).toMatch(/\d\d:\d\d:\d\d batch b00001 submitted: 300 requests \(batch_\w+\)/)
    expect(history).toMatch(/\d\d:\d\d:\d\d batch b0000\d expired at the provider after [\d.]+ s: [\d,]+ of 300 answered; the other \d+ go to a retry round \(while attempts remain\)/)
    expect(history).toMatch(/\d\d:\d\d:\d\d retry round 1: \d+ requests go out again in \d+ ms \(\d+ unanswered in expired batches(, \d+ failed)?\)/)
    expect(history).toMatch(/\d\d:\d\d:\d\d batch b0000\d completed after [\d.]+ m?s: \d+ answered/)
    // the summary, once the bar is gone
    const rows = /run tickets-\S+: completed in [\d.]+ s\n\s+rows\s+1,200 · succeeded ([\d,]+) · failed (\d+)/.exec(history)
    expect(rows, "the summary's rows").not.toBeNull()
    // a line that failed three times (expired, then 500s) is dead-lettered: every row is in one place or the other
    expect(Number(rows![1]!.replace(/,/g, "")) + Number(rows![2])).toBe(1_200)
    expect(history).toMatch(/batches\s+\d+ · \d+ expired · \d+ retry rounds? sent [\d,]+ requests again · \d+ provider calls backed off/)
    // nothing garbled: once the run ended, no status line is left anywhere, and every line is an event, the summary
    // or the exit code — never a bar fragment glued to an event
    expect(lines.filter((l) => / rows\/s /.test(l) || BATCHES.test(l))).toEqual([])
    for (const l of lines) expect(l, l).toMatch(/^(\d\d:\d\d:\d\d \S|run tickets-|  [a-z]|EXIT=)/)
  }, 180_000)

  it("a wrong base URL: the refused host and the cause within 10 seconds, and Ctrl-C detaches", async () => {
    const dir = tmpDir("tty-refused")
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, 50, 2)
    const port = await closedPort()
    const started = Date.now()
    const s = session("refused", dir, ["run", fixture, "--state-dir", "st"], {
      OPENAI_API_KEY: "sk-test",
      OPENAI_BASE_URL: `http://127.0.0.1:${port}/v1`,
      OFFPEAK_TEST_INPUT: input,
      OFFPEAK_TEST_OUT: path.join(dir, "out")
    })
    const said = new RegExp(
      `\\d\\d:\\d\\d:\\d\\d provider unreachable: openai \\S+: cannot connect to 127\\.0\\.0\\.1:${port}: connection refused ` +
        `\\(connect ECONNREFUSED 127\\.0\\.0\\.1:${port}\\); next attempt at \\d\\d:\\d\\d:\\d\\d \\(in [\\d.]+ m?s\\)`
    )
    // timed from the run's start (the process is up, the first call is about to fail) to the line naming the host
    let runStarted: number | undefined
    let named: number | undefined
    let screen = ""
    while (Date.now() - started < 30_000) {
      screen = s.screen()
      if (runStarted === undefined && / started \(batch mode\)/.test(screen)) runStarted = Date.now() - started
      if (said.test(screen)) {
        named = Date.now() - started
        break
      }
      await sleep(100)
    }
    console.log(screen.trimEnd())
    console.log(
      `the refused host was named ${named ?? "never"} ms after the command started, ` +
        `${named === undefined || runStarted === undefined ? "-" : named - runStarted} ms after the run started`
    )
    s.keys("C-c")
    let after = ""
    for (let i = 0; i < 100 && !/EXIT=/.test(after); i++) {
      await sleep(100)
      after = s.history()
    }
    s.kill()
    expect(runStarted).toBeDefined()
    expect(named).toBeDefined()
    expect(named! - runStarted!).toBeLessThan(10_000)
    expect(after).toMatch(/detached from run tickets-\S+: batches at the provider keep running; offpeak resume tickets-\S+ --state-dir st picks them up/)
    expect(after).toMatch(/EXIT=130/)
  }, 60_000)

  it.each([
    ["anthropic", (url: string) => ({ ANTHROPIC_API_KEY: "test", ANTHROPIC_BASE_URL: url })],
    ["gemini", (url: string) => ({ GEMINI_API_KEY: "test", GOOGLE_GEMINI_BASE_URL: url })]
  ] as const)("%s with a wrong base URL names the refused host within 10 seconds (off a terminal)", async (provider, envOf) => {
    const dir = tmpDir(`refused-${provider}`)
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, 20, 4)
    const port = await closedPort()
    const started = Date.now()
    const run = startCli(["run", fixture, "--provider", provider, "--state-dir", "st"], {
      cwd: dir,
      env: { ...envOf(`http://127.0.0.1:${port}`), OFFPEAK_TEST_INPUT: input, OFFPEAK_TEST_OUT: path.join(dir, "out") }
    })
    const said = new RegExp(`provider unreachable: ${provider} \\S+: cannot connect to 127\\.0\\.0\\.1:${port}: connection refused`)
    let runStarted: number | undefined
    let named: number | undefined
    while (Date.now() - started < 30_000 && run.child.exitCode === null) {
      const stderr = run.output().stderr
      if (runStarted === undefined && / started \(batch mode\)/.test(stderr)) runStarted = Date.now() - started
      if (said.test(stderr)) {
        named = Date.now() - started
        break
      }
      await sleep(50)
    }
    run.child.kill("SIGINT")
    const exit = await run.exit
    console.log(exit.stderr)
    console.log(
      `${provider}: the refused host was named ${named ?? "never"} ms after the command started, ` +
        `${named === undefined || runStarted === undefined ? "-" : named - runStarted} ms after the run started`
    )
    expect(runStarted).toBeDefined()
    expect(named).toBeDefined()
    expect(named! - runStarted!).toBeLessThan(10_000)
    expect(exit.stderr).not.toMatch(/\x1b\[/)
  }, 60_000)
})
