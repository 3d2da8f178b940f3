// Runs the public conformance suite against CONFORMANCE_TEST_URL (set by run_conformance.py).
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.CONFORMANCE_TEST_URL
if (!baseUrl) throw new Error("CONFORMANCE_TEST_URL is required")
// URSULA_SUBSCRIPTIONS=1 also runs the opt-in "Reserved subscription APIs" group (6 tests)
runConformanceTests({ baseUrl, subscriptions: process.env.URSULA_SUBSCRIPTIONS === "1" })
