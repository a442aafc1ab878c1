// k6 load for tools/bench/k6.py: KServe v2 ModelInfer over gRPC at a constant
// concurrency (constant VUs), the service found through server reflection.
//
// Environment (k6 -e NAME=VALUE):
//   ADDRESS   host:port of the server
//   REQUEST   a file holding the ModelInferRequest as protobuf JSON
//   VUS       concurrency (virtual users, one request in flight each)
//   SECONDS   how long to measure, after WARMUP seconds whose requests are left out
//   WARMUP    seconds of warm-up (each VU connects and reflects then)
//   TLS       "1": TLS (the CA from the system or SSL_CERT_FILE), else plaintext
//   METADATA  optional JSON object of request metadata (authorization, ...)
//
// Requests that start after the warm-up are tagged phase=measure; the thresholds below
// only make k6 keep those submetrics in its --summary-export (they always pass).
import exec from 'k6/execution';
import grpc from 'k6/net/grpc';
import { Counter } from 'k6/metrics';

const METHOD = 'inference.GRPCInferenceService/ModelInfer';
const request = JSON.parse(open(__ENV.REQUEST));
const vus = parseInt(__ENV.VUS || '1', 10);
const seconds = parseFloat(__ENV.SECONDS || '5');
const warmup = parseFloat(__ENV.WARMUP || '1');
const metadata = JSON.parse(__ENV.METADATA || '{}');
const errors = new Counter('infer_errors');

export const options = {
  scenarios: {
    infer: {
      executor: 'constant-vus',
      vus: vus,
      duration: `${Math.round((seconds + warmup) * 1000)}ms`,
      gracefulStop: '10s',
    },
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(50)', 'p(90)', 'p(99)', 'max', 'count'],
  thresholds: {
    'grpc_req_duration{phase:measure}': ['max>=0'],
    'iterations{phase:measure}': ['count>=0'],
    'infer_errors{phase:measure}': ['count>=0'],
  },
};

const client = new grpc.Client();
let connected = false;
let reported = false;

export default function () {
  const elapsed = (Date.now() - exec.scenario.startTime) / 1000;
  exec.vu.metrics.tags.phase = elapsed >= warmup ? 'measure' : 'warmup';
  if (!connected) {
    client.connect(__ENV.ADDRESS, { plaintext: __ENV.TLS !== '1', reflect: true });
    connected = true;
  }
  const reply = client.invoke(METHOD, request, { metadata: metadata, timeout: '30s' });
  if (!reply || reply.status !== grpc.StatusOK) {
    errors.add(1);
    if (!reported) {
      // The first failure of each VU goes to the log, for the wrapper to quote.
      reported = true;
      const why = reply && reply.error ? JSON.stringify(reply.error) : 'no reply';
      console.error(`ModelInfer failed: status ${reply ? reply.status : '-'}: ${why}`);
    }
  }
}
