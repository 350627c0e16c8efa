// A local promptfoo provider for the import tests: no network, fixed answers, fixed latency, cost and usage.
// The candidate hands refunds over to a human ("[handoff]"), the legacy arm answers everything itself.
class SupportAgent {
  constructor(options) {
    this.arm = (options && options.config && options.config.arm) || "candidate";
    this.providerId = (options && options.id) || "support-agent";
  }

  id() {
    return this.providerId;
  }

  async callApi(prompt) {
    const refund = prompt.includes("refund");
    const handoff = this.arm === "candidate" && refund;
    const output = refund ? `REFUND approved.${handoff ? " [handoff]" : ""}` : `Answer: ${prompt}`;
    const latencyMs = (this.arm === "candidate" ? 1000 : 2000) + prompt.length;
    return {
      output,
      latencyMs,
      cost: this.arm === "candidate" ? 0.002 : 0.001,
      tokenUsage: { total: 30, prompt: 20, completion: 10, numRequests: 1 },
    };
  }
}

module.exports = SupportAgent;
