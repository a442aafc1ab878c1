// Calls ModelInfer on a maas endpoint with @grpc/grpc-js, loading the .proto files
// at run time: usage `node infer.js HOST:PORT PROTO_ROOT MODEL [API_KEY]`.
// Sends a = [1, 2, 3, 4] and b = [10, 20, 30, 40] as raw FP32 and prints the
// response as JSON, with the raw outputs decoded to numbers. With MAAS_TLS_CA set
// (a PEM CA file) it connects over TLS, trusting that CA.
'use strict';
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const fs = require('fs');
const path = require('path');

const [address, protoRoot, model, apiKey] = process.argv.slice(2);
const definition = protoLoader.loadSync('maas_proto/inference/grpc_predict_v2.proto', {
  includeDirs: [protoRoot], keepCase: true, longs: Number, defaults: true,
});
const inference = grpc.loadPackageDefinition(definition).inference;
const credentials = process.env.MAAS_TLS_CA
  ? grpc.credentials.createSsl(fs.readFileSync(process.env.MAAS_TLS_CA))
  : grpc.credentials.createInsecure();
const client = new inference.GRPCInferenceService(address, credentials);

function f32(values) {
  return Buffer.from(new Float32Array(values).buffer);
}

const metadata = new grpc.Metadata();
if (apiKey) metadata.add('authorization', `Bearer ${apiKey}`);
const request = {
  model_name: model,
  id: 'from-node',
  inputs: [
    { name: 'a', datatype: 'FP32', shape: [1, 4] },
    { name: 'b', datatype: 'FP32', shape: [1, 4] },
  ],
  raw_input_contents: [f32([1, 2, 3, 4]), f32([10, 20, 30, 40])],
};
client.ModelInfer(request, metadata, { deadline: Date.now() + 20000 }, (err, response) => {
  if (err) {
    console.error(JSON.stringify({ code: err.code, details: err.details }));
    process.exit(1);
  }
  const outputs = {};
  response.outputs.forEach((o, i) => {
    const raw = response.raw_output_contents[i];
    // Copy first: a protobuf bytes field need not start 4-byte aligned.
    outputs[o.name] = Array.from(new Float32Array(Uint8Array.from(raw).buffer));
  });
  console.log(JSON.stringify({
    id: response.id, model_name: response.model_name, model_version: response.model_version, outputs,
  }));
});
