// Peer-client session: fhir-kit-client (node) against a live fhir-app server (issue 12,
// CONTRACT 5 v2). What an EHR integration team does with it: write the inputs, read the derived
// outputs, history at each level (instance, type, system, `_since` for incremental sync), POST
// search, compartment search, JSON Patch, $validate, $everything, batch and transaction,
// conditional update and delete, paging with nextPage.
//
//   node session.mjs http://127.0.0.1:8080/fhir [patient-id]
//
// Prints one JSON report on stdout: {client, version, base, steps: [{name, ok, detail}]}.
// Exit code 0 when every step held, 1 when some did not, 2 on usage errors.
// Each step builds on the earlier ones; a failed step says what was sent and what came back.

import { readFileSync } from 'node:fs';
import { CapabilityTool, Client } from 'fhir-kit-client';

const [base, pid = 'fk1'] = process.argv.slice(2);
if (!base) {
  process.stderr.write('usage: node session.mjs BASE_URL [PATIENT_ID]\n');
  process.exit(2);
}
const version = JSON.parse(
  readFileSync(new URL('./node_modules/fhir-kit-client/package.json', import.meta.url), 'utf8'),
).version;

const client = new Client({ baseUrl: base });
const steps = [];
const state = {};

// ------------------------------------------------------------------ helpers

class StepFailure extends Error {}

function check(condition, message) {
  if (!condition) throw new StepFailure(message);
}

// JSON with the keys of every object sorted: FHIR JSON has no key order (PostgreSQL's jsonb
// returns its own), arrays keep theirs.
function canonical(value) {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, canonical(value[k])]));
  }
  return value;
}

function equal(actual, expected, what) {
  const a = JSON.stringify(canonical(actual));
  const e = JSON.stringify(canonical(expected));
  check(a === e, `${what}: expected ${e}, got ${a}`);
}

// What the server answered when a request failed: status and the OperationOutcome's diagnostics.
function describe(error) {
  if (error instanceof StepFailure) return error.message;
  const response = error.response;
  if (response) {
    const data = response.data;
    const said = data && Array.isArray(data.issue)
      ? data.issue.map((i) => i.diagnostics || i.code).join(' | ')
      : JSON.stringify(data).slice(0, 300);
    return `${error.message}: ${said}`;
  }
  const cause = error.cause ? ` (${error.cause.code || error.cause.message})` : '';
  return `${error.name}: ${error.message}${cause}`;
}

async function step(name, body) {
  try {
    await body();
    steps.push({ name, ok: true, detail: '' });
  } catch (error) {
    steps.push({ name, ok: false, detail: describe(error) });
  }
}

// The HTTP status of a request that is expected to fail.
async function statusOf(promise) {
  try {
    await promise;
    return 200;
  } catch (error) {
    if (error.response) return error.response.status;
    throw error;
  }
}

const entries = (bundle) => bundle.entry || [];
const resources = (bundle) => entries(bundle).map((e) => e.resource);
// Every resource of a Bundle and of the pages after it (following `next`).
async function allPages(bundle) {
  const out = [];
  let page = bundle;
  let pages = 0;
  do {
    out.push(...resources(page).filter(Boolean));
    pages += 1;
    check(pages <= 100, 'more than 100 pages');
  } while ((page = await client.nextPage({ bundle: page })));
  return out;
}
const refId = (reference) => reference.split('/').slice(0, 2).join('/');
const IDENTIFIER_SYSTEM = 'urn:fhir-app:peer-session';
const MCODE_PRIMARY = 'http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition';
const SNOMED = 'http://snomed.info/sct';
const SPINE = 'https://fhir-app.org/fhir/CodeSystem/spine-finding';
const SINS = 'https://fhir-app.org/fhir/CodeSystem/sins';
const UCUM = 'http://unitsofmeasure.org';
const DERIVED_OBSERVATIONS = 5; // SINS and classification per level (2), NOMS inputs

// ------------------------------------------------------------------ the seed (CONTRACT 3)

const cc = (system, code, display) => ({ coding: [{ system, code, ...(display ? { display } : {}) }] });
const component = (code, value) => ({ code: cc(SPINE, code), ...value });
const identifier = (value) => [{ system: IDENTIFIER_SYSTEM, value }];

function panel(level, snomed, effective, components, idValue) {
  return {
    resourceType: 'Observation',
    identifier: identifier(idValue),
    status: 'final',
    code: cc(SPINE, 'vertebral-lesion', 'Vertebral lesion'),
    subject: { reference: `Patient/${pid}` },
    effectiveDateTime: effective,
    bodySite: cc(SNOMED, snomed, `${level} vertebra`),
    derivedFrom: [{ reference: `ImagingStudy/${pid}-ct` }],
    component: components,
  };
}

const percent = (value) => ({ valueQuantity: { value, unit: '%', system: UCUM, code: '%' } });
const T11 = panel('T11', '12989004', '2025-09-14T07:30:00Z', [
  component('lesion-appearance', { valueCodeableConcept: cc(SINS, 'lytic') }),
  component('spinal-alignment', { valueCodeableConcept: cc(SINS, 'de-novo-deformity') }),
  component('vertebral-body-height-loss', percent(55)),
  component('posterior-element-involvement', {
    valueCodeableConcept: cc(SNOMED, '51440002', 'Right and left'),
  }),
  component('pain-character', { valueCodeableConcept: cc(SINS, 'mechanical') }),
], `${pid}-t11`);
const T4 = panel('T4', '73071006', '2025-09-10T07:30:00Z', [
  component('lesion-appearance', { valueCodeableConcept: cc(SINS, 'blastic') }),
  component('spinal-alignment', { valueCodeableConcept: cc(SINS, 'normal-alignment') }),
  component('vertebral-body-height-loss', percent(0)),
], `${pid}-t4`);

const PATIENT = {
  resourceType: 'Patient',
  id: pid,
  identifier: identifier(pid),
  name: [{ family: 'Peer', given: ['Session'] }],
  gender: 'female',
  birthDate: '1961-11-23',
};
const STUDY = {
  resourceType: 'ImagingStudy',
  id: `${pid}-ct`,
  status: 'available',
  identifier: [{ system: 'urn:dicom:uid', value: 'urn:oid:1.2.826.9.2' }],
  subject: { reference: `Patient/${pid}` },
  started: '2025-09-14T07:00:00Z',
  series: [{
    uid: '1.2.826.9.2.1',
    modality: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: 'CT' },
    bodySite: { system: SNOMED, code: '421060004', display: 'Spinal structure' },
  }],
};
const CONDITION = {
  resourceType: 'Condition',
  meta: { profile: [MCODE_PRIMARY] },
  identifier: identifier(`${pid}-primary`),
  clinicalStatus: cc('http://terminology.hl7.org/CodeSystem/condition-clinical', 'active'),
  verificationStatus: cc('http://terminology.hl7.org/CodeSystem/condition-ver-status', 'confirmed'),
  code: cc(SNOMED, '254837009', 'Malignant neoplasm of breast'),
  subject: { reference: `Patient/${pid}` },
};

// ------------------------------------------------------------------ the session

await step('capabilityStatement: R4, the input types declared', async () => {
  const capability = await client.capabilityStatement();
  equal(capability.resourceType, 'CapabilityStatement', 'resourceType');
  equal(capability.fhirVersion, '4.0.1', 'fhirVersion');
  const declared = capability.rest[0].resource;
  const types = declared.map((r) => r.type);
  for (const type of ['Observation', 'ImagingStudy', 'Patient', 'RiskAssessment']) {
    check(types.includes(type), `${type} not declared`);
  }
  const condition = declared.find((r) => r.type === 'Condition');
  state.condition = Boolean(condition && condition.interaction.some((i) => i.code === 'create'));
});

// The statement declares exactly what works (CONTRACT 5 v2): what this session does is declared,
// and what it is refused is not.
await step('CapabilityTool: every interaction this session uses is declared', async () => {
  const capability = await client.capabilityStatement();
  const tool = new CapabilityTool(capability);
  for (const interaction of ['transaction', 'batch', 'history-system']) {
    check(tool.serverCan(interaction), `server interaction ${interaction} not declared`);
  }
  const writes = ['create', 'update', 'delete', 'patch'];
  const reads = ['read', 'vread', 'history-instance', 'history-type', 'search-type'];
  for (const type of ['Observation', 'ImagingStudy', 'Patient']) {
    for (const interaction of [...reads, ...writes]) {
      check(tool.resourceCan(type, interaction), `${type} ${interaction} not declared`);
    }
    const resource = tool.resourceCapabilities({ resourceType: type });
    check(resource.conditionalCreate === true, `${type} conditionalCreate not declared`);
    check(resource.conditionalUpdate === true, `${type} conditionalUpdate not declared`);
    check(['single', 'multiple'].includes(resource.conditionalDelete), `${type} conditionalDelete is ${resource.conditionalDelete}`);
  }
  for (const type of ['RiskAssessment', 'DiagnosticReport', 'Provenance']) {
    for (const interaction of reads) check(tool.resourceCan(type, interaction), `${type} ${interaction} not declared`);
    for (const interaction of writes) check(!tool.resourceCan(type, interaction), `${type} ${interaction} declared, but outputs are read-only`);
  }
  for (const [type, name] of [['Observation', 'subject'], ['Observation', 'patient'], ['Observation', 'code'], ['Observation', 'identifier'], ['RiskAssessment', 'patient'], ['DiagnosticReport', 'subject']]) {
    check(tool.resourceSearch(type, name), `${type} search by ${name} not declared`);
  }
  const report = tool.resourceCapabilities({ resourceType: 'DiagnosticReport' });
  check((report.searchInclude || []).includes('DiagnosticReport:result'), '_include=DiagnosticReport:result not declared');
  check((report.searchRevInclude || []).includes('Provenance:target'), '_revinclude=Provenance:target not declared');
  const operations = (type) => (tool.capabilityContents({ resourceType: type, capabilityType: 'operation' }) || []).map((o) => o.name);
  check(operations('Observation').includes('validate'), 'Observation $validate not declared');
  check(operations('Patient').includes('everything'), 'Patient $everything not declared');
});

await step('update: Patient and ImagingStudy at the client ids (PUT)', async () => {
  const patient = await client.update({ resourceType: 'Patient', id: pid, body: PATIENT });
  equal(patient.meta.versionId, '1', 'Patient versionId');
  const study = await client.update({ resourceType: 'ImagingStudy', id: `${pid}-ct`, body: STUDY });
  equal(study.id, `${pid}-ct`, 'ImagingStudy id');
  state.since = patient.meta.lastUpdated; // before every write of the findings
});

await step('create: two findings (POST), the server assigns the ids', async () => {
  const t11 = await client.create({ resourceType: 'Observation', body: T11 });
  const t4 = await client.create({ resourceType: 'Observation', body: T4 });
  check(t11.id && t4.id && t11.id !== t4.id, 'no distinct server ids');
  equal(t11.meta.versionId, '1', 'versionId');
  state.t11 = t11.id;
  state.t4 = t4.id;
});

if (state.condition) {
  await step('create and read: a Condition (declared in the CapabilityStatement)', async () => {
    const condition = await client.create({ resourceType: 'Condition', body: CONDITION });
    const read = await client.read({ resourceType: 'Condition', id: condition.id });
    equal(read.code.coding[0].code, '254837009', 'Condition code');
    state.conditionId = condition.id;
  });
}

await step('read and vread: the finding and its version 1', async () => {
  const read = await client.read({ resourceType: 'Observation', id: state.t11 });
  equal(read.identifier, T11.identifier, 'identifier');
  const first = await client.vread({ resourceType: 'Observation', id: state.t11, version: '1' });
  equal(first.meta.versionId, '1', 'vread versionId');
});

await step('search: the derived RiskAssessments, one per level', async () => {
  const bundle = await client.search({ resourceType: 'RiskAssessment', searchParams: { patient: pid } });
  equal(bundle.type, 'searchset', 'Bundle.type');
  const risks = resources(bundle);
  equal(risks.length, 2, 'RiskAssessments');
  for (const risk of risks) equal(risk.subject.reference, `Patient/${pid}`, 'subject');
});

await step('read: the derived DiagnosticReport and each of its results', async () => {
  const bundle = await client.search({ resourceType: 'DiagnosticReport', searchParams: { subject: `Patient/${pid}` } });
  const reports = resources(bundle);
  equal(reports.length, 1, 'reports');
  state.report = reports[0];
  equal(state.report.result.length, DERIVED_OBSERVATIONS, 'results');
  for (const ref of state.report.result) {
    const [resourceType, id] = refId(ref.reference).split('/');
    const result = await client.read({ resourceType, id });
    equal(result.resourceType, 'Observation', 'result type');
  }
});

await step('resolve: a versioned reference of the report (Observation/x/_history/1)', async () => {
  const reference = state.report.result[0].reference;
  const resolved = await client.resolve({ reference });
  equal(`${resolved.resourceType}/${resolved.id}`, refId(reference), 'resolved');
  if (reference.includes('/_history/')) equal(resolved.meta.versionId, reference.split('/')[3], 'version');
});

await step('POST search with _include and _revinclude: the report, its results, its Provenance', async () => {
  const bundle = await client.search({
    resourceType: 'DiagnosticReport',
    searchParams: {
      subject: `Patient/${pid}`,
      _include: 'DiagnosticReport:result',
      _revinclude: 'Provenance:target',
    },
    options: { postSearch: true },
  });
  const matches = entries(bundle).filter((e) => e.search.mode === 'match').map((e) => e.resource);
  const included = entries(bundle).filter((e) => e.search.mode === 'include').map((e) => e.resource);
  equal(matches.map((r) => r.resourceType), ['DiagnosticReport'], 'matches');
  const results = new Set(matches[0].result.map((r) => refId(r.reference)));
  const observations = included.filter((r) => r.resourceType === 'Observation').map((r) => `Observation/${r.id}`);
  equal(observations.sort(), [...results].sort(), 'included results');
  const provenances = included.filter((r) => r.resourceType === 'Provenance');
  check(provenances.length > 0, 'no Provenance included');
  const report = `DiagnosticReport/${matches[0].id}`;
  for (const provenance of provenances) {
    check(provenance.target.some((t) => refId(t.reference) === report), `Provenance/${provenance.id} does not target ${report}`);
  }
});

await step('nextPage: _count=2 pages through every Observation of the patient', async () => {
  let bundle = await client.search({ resourceType: 'Observation', searchParams: { patient: pid, _count: 2 } });
  const ids = resources(bundle).map((r) => r.id);
  let pages = 1;
  while ((bundle = await client.nextPage({ bundle }))) {
    ids.push(...resources(bundle).map((r) => r.id));
    pages += 1;
    check(pages < 20, 'more than 20 pages');
  }
  equal(ids.length, 2 + DERIVED_OBSERVATIONS, 'Observations');
  equal(new Set(ids).size, ids.length, 'distinct Observations');
  equal(pages, 4, 'pages');
});

await step('POST search: Observation/_search (form body) answers as GET does', async () => {
  const searchParams = { subject: `Patient/${pid}`, _count: 50 };
  const get = await client.search({ resourceType: 'Observation', searchParams });
  const post = await client.search({ resourceType: 'Observation', searchParams, options: { postSearch: true } });
  equal(post.type, 'searchset', 'Bundle.type');
  equal(resources(post).map((r) => r.id).sort(), resources(get).map((r) => r.id).sort(), 'ids');
  equal(resources(post).length, 2 + DERIVED_OBSERVATIONS, 'Observations');
});

await step('compartmentSearch: Patient/{id}/Observation and Patient/{id}/RiskAssessment', async () => {
  const compartment = { resourceType: 'Patient', id: pid };
  const observations = await client.compartmentSearch({ resourceType: 'Observation', compartment, searchParams: { _count: 50 } });
  equal(resources(observations).length, 2 + DERIVED_OBSERVATIONS, 'Observations');
  const risks = await client.compartmentSearch({ resourceType: 'RiskAssessment', compartment });
  equal(resources(risks).length, 2, 'RiskAssessments');
  const other = await client.compartmentSearch({ resourceType: 'Observation', compartment: { resourceType: 'Patient', id: `${pid}-nobody` } });
  equal(resources(other).length, 0, "another patient's compartment");
});

await step('compartmentSearch with a parameter: Patient/{id}/Observation?code=...', async () => {
  const compartment = { resourceType: 'Patient', id: pid };
  const bundle = await client.compartmentSearch({ resourceType: 'Observation', compartment, searchParams: { code: `${SPINE}|vertebral-lesion` } });
  equal(resources(bundle).map((r) => r.id).sort(), [state.t11, state.t4].sort(), 'findings');
});

await step('update: PUT of a changed finding is version 2', async () => {
  const read = await client.read({ resourceType: 'Observation', id: state.t4 });
  read.note = [{ text: 'reviewed' }];
  const updated = await client.update({ resourceType: 'Observation', id: state.t4, body: read });
  equal(updated.meta.versionId, '2', 'versionId');
});

await step('conditional update: PUT Observation?identifier=... updates the match', async () => {
  const body = structuredClone(T4);
  body.status = 'amended';
  const updated = await client.update({
    resourceType: 'Observation',
    searchParams: { identifier: `${IDENTIFIER_SYSTEM}|${pid}-t4` },
    body,
  });
  equal(updated.id, state.t4, 'id');
  equal(updated.meta.versionId, '3', 'versionId');
  equal(updated.status, 'amended', 'status');
});

await step('patch: JSON Patch replace /status is a new version, the rest untouched', async () => {
  const patched = await client.patch({
    resourceType: 'Observation',
    id: state.t11,
    jsonPatch: [{ op: 'replace', path: '/status', value: 'amended' }],
  });
  equal(patched.status, 'amended', 'status');
  equal(patched.meta.versionId, '2', 'versionId');
  const read = await client.read({ resourceType: 'Observation', id: state.t11 });
  equal(read.component, T11.component, 'components');
  equal(read.status, 'amended', 'status read back');
});

await step('patch: a failing test op is refused and changes nothing', async () => {
  const status = await statusOf(client.patch({
    resourceType: 'Observation',
    id: state.t11,
    jsonPatch: [{ op: 'test', path: '/status', value: 'final' }, { op: 'remove', path: '/subject' }],
  }));
  check([409, 412, 422].includes(status), `answered ${status}, expected 409/412/422`);
  const read = await client.read({ resourceType: 'Observation', id: state.t11 });
  equal(read.meta.versionId, '2', 'versionId');
});

await step('patch: a derived output cannot be patched (405)', async () => {
  const status = await statusOf(client.patch({
    resourceType: 'RiskAssessment',
    id: 'anything',
    jsonPatch: [{ op: 'replace', path: '/status', value: 'final' }],
  }));
  equal(status, 405, 'status');
});

await step('resourceHistory: every version of the finding, newest first', async () => {
  const current = Number((await client.read({ resourceType: 'Observation', id: state.t4 })).meta.versionId);
  const history = await client.resourceHistory({ resourceType: 'Observation', id: state.t4 });
  equal(history.type, 'history', 'Bundle.type');
  const expected = Array.from({ length: current }, (_, i) => String(current - i));
  equal(resources(history).map((r) => r.meta.versionId), expected, 'versions');
});

await step('typeHistory: Observation/_history holds every version of the findings', async () => {
  const history = await client.typeHistory({ resourceType: 'Observation', options: {} });
  equal(history.type, 'history', 'Bundle.type');
  const all = await allPages(history);
  const seen = new Set(all.map((r) => `${r.id}/${r.meta.versionId}`));
  for (const want of [`${state.t4}/1`, `${state.t4}/2`, `${state.t11}/1`]) {
    check(seen.has(want), `${want} missing from the type history`);
  }
  check(all.every((r) => r.resourceType === 'Observation'), 'other types in it');
});

await step('systemHistory: /_history holds the Patient, the ImagingStudy and the findings', async () => {
  const history = await client.systemHistory({ options: {} });
  equal(history.type, 'history', 'Bundle.type');
  const seen = new Set((await allPages(history)).map((r) => `${r.resourceType}/${r.id}`));
  for (const want of [`Patient/${pid}`, `ImagingStudy/${pid}-ct`, `Observation/${state.t4}`]) {
    check(seen.has(want), `${want} missing from the system history`);
  }
});

await step('systemHistory _since: a system-level incremental sync', async () => {
  const all = await allPages(await client.request(`_history?_since=${encodeURIComponent(state.since)}`));
  const seen = new Set(all.map((r) => `${r.resourceType}/${r.id}`));
  check(seen.has(`Observation/${state.t11}`), 'the T11 finding is missing');
  check(all.some((r) => r.resourceType === 'RiskAssessment'), 'no derived RiskAssessment since');
  check(all.some((r) => r.resourceType === 'Patient' && r.id === pid), 'the Patient is missing');
  const future = await client.request('_history?_since=2999-01-01T00:00:00Z');
  equal(entries(future).length, 0, 'entries since the future');
});

await step('history _since: an incremental sync sees only what changed after', async () => {
  const all = await allPages(await client.request(`Observation/_history?_since=${encodeURIComponent(state.since)}`));
  check(all.length >= 5, `only ${all.length} versions since the start`);
  const before = (await client.read({ resourceType: 'Observation', id: state.t4 })).meta;
  const mark = before.lastUpdated; // `_since` is inclusive: this version may be in, older not
  await new Promise((resolve) => setTimeout(resolve, 20));
  const read = await client.read({ resourceType: 'Observation', id: state.t4 });
  read.note = [{ text: 'second review' }];
  const updated = await client.update({ resourceType: 'Observation', id: state.t4, body: read });
  const later = await allPages(await client.request(`Observation/_history?_since=${encodeURIComponent(mark)}`));
  const inputs = later.filter((r) => r.id === state.t4).map((r) => r.meta.versionId);
  check(inputs.includes(updated.meta.versionId), `the new version ${updated.meta.versionId} is not in _since`);
  const older = inputs.filter((v) => Number(v) < Number(before.versionId));
  check(older.length === 0, `versions before _since in it: ${older}`);
});

await step('$validate: a valid Observation, as Parameters, has no errors', async () => {
  const outcome = await client.operation({
    name: '$validate',
    resourceType: 'Observation',
    input: { resourceType: 'Parameters', parameter: [{ name: 'resource', resource: T4 }] },
  });
  equal(outcome.resourceType, 'OperationOutcome', 'resourceType');
  const errors = (outcome.issue || []).filter((i) => ['error', 'fatal'].includes(i.severity));
  equal(errors.length, 0, 'errors');
});

await step('$validate: an invalid Observation answers 200 with error issues, nothing stored', async () => {
  const before = await client.search({ resourceType: 'Observation', searchParams: { patient: pid, _summary: 'count' } });
  const broken = { ...T4, status: 'not-a-status' };
  const outcome = await client.operation({
    name: '$validate',
    resourceType: 'Observation',
    input: { resourceType: 'Parameters', parameter: [{ name: 'resource', resource: broken }] },
  });
  equal(outcome.resourceType, 'OperationOutcome', 'resourceType');
  const errors = (outcome.issue || []).filter((i) => ['error', 'fatal'].includes(i.severity));
  check(errors.length > 0, 'no error issue');
  const after = await client.search({ resourceType: 'Observation', searchParams: { patient: pid, _summary: 'count' } });
  equal(after.total, before.total, 'total');
});

await step('$everything: Patient/{id}/$everything holds inputs and outputs', async () => {
  const bundle = await client.operation({ name: 'everything', resourceType: 'Patient', id: pid, method: 'GET' });
  equal(bundle.resourceType, 'Bundle', 'resourceType');
  const all = await allPages(bundle);
  const seen = new Set(all.map((r) => `${r.resourceType}/${r.id}`));
  for (const want of [`Patient/${pid}`, `ImagingStudy/${pid}-ct`, `Observation/${state.t11}`, `DiagnosticReport/${state.report.id}`]) {
    check(seen.has(want), `${want} missing`);
  }
  check(all.filter((r) => r.resourceType === 'RiskAssessment').length === 2, 'RiskAssessments missing');
});

await step('batch: GET, search and POST entries, each answered', async () => {
  const extra = structuredClone(T4);
  extra.identifier = identifier(`${pid}-t4-batch`);
  const response = await client.batch({
    body: {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: `Patient/${pid}` } },
        { request: { method: 'GET', url: `RiskAssessment?patient=${pid}` } },
        { resource: extra, request: { method: 'POST', url: 'Observation' } },
        { request: { method: 'GET', url: 'Observation/does-not-exist' } },
      ],
    },
  });
  equal(response.type, 'batch-response', 'Bundle.type');
  const statuses = entries(response).map((e) => e.response.status.split(' ')[0]);
  equal(statuses, ['200', '200', '201', '404'], 'statuses');
  equal(entries(response)[0].resource.id, pid, 'read entry');
  equal(entries(response)[1].resource.type, 'searchset', 'search entry');
  state.batchId = entries(response)[2].response.location.split('/')[1];
});

await step('transaction: create and conditional delete, atomically', async () => {
  const extra = structuredClone(T11);
  extra.identifier = identifier(`${pid}-t11-tx`);
  const response = await client.transaction({
    body: {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          fullUrl: 'urn:uuid:0b3f6a52-2f53-4f65-9d0b-6f3c0f0a7e11',
          resource: extra,
          request: { method: 'POST', url: 'Observation' },
        },
        { request: { method: 'DELETE', url: `Observation?identifier=${IDENTIFIER_SYSTEM}|${pid}-t4-batch` } },
      ],
    },
  });
  equal(response.type, 'transaction-response', 'Bundle.type');
  const statuses = entries(response).map((e) => e.response.status.split(' ')[0]);
  check(statuses[0] === '201' && ['200', '204'].includes(statuses[1]), `statuses ${statuses}`);
  state.txId = entries(response)[0].response.location.split('/')[1];
  const gone = await statusOf(client.read({ resourceType: 'Observation', id: state.batchId }));
  check([404, 410].includes(gone), `the conditionally deleted finding answers ${gone}`);
});

await step('transaction: a failing entry rolls back the whole Bundle', async () => {
  const extra = structuredClone(T11);
  extra.identifier = identifier(`${pid}-t11-rollback`);
  const status = await statusOf(client.transaction({
    body: {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { resource: extra, request: { method: 'POST', url: 'Observation' } },
        { resource: { resourceType: 'RiskAssessment', status: 'final' }, request: { method: 'POST', url: 'RiskAssessment' } },
      ],
    },
  }));
  check(status >= 400 && status < 500, `answered ${status}`);
  const found = await client.search({ resourceType: 'Observation', searchParams: { identifier: `${IDENTIFIER_SYSTEM}|${pid}-t11-rollback` } });
  equal(resources(found).length, 0, 'stored from the failed transaction');
});

await step('conditional delete: DELETE Observation?identifier=... removes the match', async () => {
  await client.request(`Observation?identifier=${encodeURIComponent(`${IDENTIFIER_SYSTEM}|${pid}-t11-tx`)}`, { method: 'DELETE' });
  const gone = await statusOf(client.read({ resourceType: 'Observation', id: state.txId }));
  check([404, 410].includes(gone), `answered ${gone}`);
});

await step('delete: the T4 finding, then read is gone and its level withdrawn', async () => {
  await client.delete({ resourceType: 'Observation', id: state.t4 });
  const gone = await statusOf(client.read({ resourceType: 'Observation', id: state.t4 }));
  check([404, 410].includes(gone), `answered ${gone}`);
  const risks = resources(await client.search({ resourceType: 'RiskAssessment', searchParams: { patient: pid } }));
  equal(risks.filter((r) => r.status === 'entered-in-error').length, 1, 'withdrawn RiskAssessments');
});

await step('resourceHistory after delete: the deletion is the newest entry', async () => {
  const history = await client.resourceHistory({ resourceType: 'Observation', id: state.t4 });
  const newest = entries(history)[0];
  equal(newest.request && newest.request.method, 'DELETE', 'newest entry method');
  check(!newest.resource, 'a deletion entry carries no resource');
  check(entries(history).slice(1).every((e) => e.resource), 'older versions without resources');
});

if (state.conditionId) {
  await step('delete: the Condition', async () => {
    await client.delete({ resourceType: 'Condition', id: state.conditionId });
    const gone = await statusOf(client.read({ resourceType: 'Condition', id: state.conditionId }));
    check([404, 410].includes(gone), `answered ${gone}`);
  });
}

await step('create: a derived output is refused (405)', async () => {
  const status = await statusOf(client.create({ resourceType: 'RiskAssessment', body: { resourceType: 'RiskAssessment', status: 'final' } }));
  equal(status, 405, 'status');
});

const report = { client: 'fhir-kit-client', version, base, steps };
process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
process.exit(steps.every((s) => s.ok) ? 0 : 1);
