// Compile contracts/TestToken.sol into contracts/TestToken.json ({abi, bytecode}).
// Run from the repository root after `npm ci`:   node contracts/compile.js
// The JSON is committed, so tests never need the compiler at run time.
'use strict';

const fs = require('fs');
const path = require('path');
const solc = require('solc');

const CONTRACT = 'TestToken';
const SOURCE_PATH = path.join(__dirname, `${CONTRACT}.sol`);
const OUTPUT_PATH = path.join(__dirname, `${CONTRACT}.json`);

function compilerInput(source) {
  return {
    language: 'Solidity',
    sources: { [`${CONTRACT}.sol`]: { content: source } },
    settings: {
      evmVersion: 'paris',
      optimizer: { enabled: true, runs: 200 },
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
    },
  };
}

function compile(source) {
  const output = JSON.parse(solc.compile(JSON.stringify(compilerInput(source))));
  const problems = output.errors || [];
  problems.filter((p) => p.severity !== 'error').forEach((p) => console.warn(p.formattedMessage));
  const errors = problems.filter((p) => p.severity === 'error');
  if (errors.length) {
    errors.forEach((e) => console.error(e.formattedMessage));
    process.exit(1);
  }
  return output.contracts[`${CONTRACT}.sol`][CONTRACT];
}

function main() {
  const contract = compile(fs.readFileSync(SOURCE_PATH, 'utf8'));
  const artifact = { abi: contract.abi, bytecode: '0x' + contract.evm.bytecode.object };
  fs.writeFileSync(OUTPUT_PATH, JSON.stringify(artifact, null, 2) + '\n');
  console.log(`wrote ${path.relative(process.cwd(), OUTPUT_PATH)} with solc ${solc.version()}`);
}

main();
