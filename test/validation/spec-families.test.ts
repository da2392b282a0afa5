/**
 * Rule families written from the R4 specification text (issue 18), each on small hand-written resources.
 * The section of the specification is named in each describe.
 */
import { describe, expect, it } from 'vitest';
import { createFhirValidatorSync } from '../../src/fhir/validation/index.js';
import { errorPaths, errors, validator } from './helpers.js';

describe('base64Binary and Attachment (datatypes.html#primitive, #Attachment; RFC 4648)', () => {
  const binary = (data: string) => ({ resourceType: 'Binary', contentType: 'text/plain', data });
  const media = (content: object) => ({ resourceType: 'Media', status: 'completed', content });

  it('accepts base64 with padding at the end and with whitespace between groups', () => {
    expect(errors(binary('aGk='))).toEqual([]);
    expect(errors(binary('aA=='))).toEqual([]);
    expect(errors(binary('aGVs\n bG8h'))).toEqual([]);
  });

  it("refuses '=' inside the value, more than two '=' and incomplete groups", () => {
    expect(errorPaths(binary('aG=k'))).toEqual(['Binary.data']);
    expect(errorPaths(binary('a==='))).toEqual(['Binary.data']);
    expect(errorPaths(binary('aGVsbG8'))).toEqual(['Binary.data']);
    expect(errorPaths(binary('aGk=aGk='))).toEqual(['Binary.data']);
  });

  it('reports invalid attachment data at .data, inside any element of type Attachment', () => {
    expect(errorPaths(media({ contentType: 'text/plain', data: 'a*b=' }))).toEqual(['Media.content.data']);
    const params = {
      resourceType: 'Parameters',
      parameter: [{ name: 'doc', valueAttachment: { contentType: 'text/plain', data: 'a*b=' } }],
    };
    expect(errorPaths(params)).toEqual(['Parameters.parameter[0].value.ofType(Attachment).data']);
  });

  it('checks the stated size against the decoded length, only when the data is valid', () => {
    // 'aGk=' decodes to 2 bytes.
    expect(errors(media({ contentType: 'text/plain', data: 'aGk=', size: 2 }))).toEqual([]);
    expect(errorPaths(media({ contentType: 'text/plain', data: 'aGk=', size: 3 }))).toEqual([
      'Media.content',
    ]);
    expect(errorPaths(media({ contentType: 'text/plain', data: 'a*k=', size: 3 }))).toEqual([
      'Media.content.data',
    ]);
  });
});

describe('extensions of other FHIR versions (versions.html#extensions)', () => {
  const strict = createFhirValidatorSync({ unknownExtensionSeverity: 'error' });
  // Issues about the extensions (dom-6, a narrative is recommended, is reported at the resource).
  const issues = (resource: object) =>
    strict
      .validate(resource)
      .issues.map((i) => `${i.severity} ${i.expression?.[0] ?? ''}`)
      .filter((i) => i.includes('extension'));

  it('accepts an R5 element carried as an extension, with no unknown-extension issue', () => {
    const patient = {
      resourceType: 'Patient',
      extension: [
        {
          url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Patient.contact.additionalName',
          valueString: 'x',
        },
        {
          url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Patient.link.other',
          valueReference: { reference: 'Patient/p2' },
        },
      ],
    };
    expect(issues(patient)).toEqual([]);
  });

  it('accepts the STU3 and R4B forms, and a complex cross-version extension', () => {
    const vs = {
      resourceType: 'ValueSet',
      status: 'draft',
      extension: [
        {
          url: 'http://hl7.org/fhir/3.0/StructureDefinition/extension-ValueSet.extensible',
          valueBoolean: true,
        },
        {
          url: 'http://hl7.org/fhir/4.3/StructureDefinition/extension-ValueSet.compose.property',
          extension: [{ url: 'code', valueCode: 'status' }],
        },
      ],
    };
    expect(issues(vs)).toEqual([]);
  });

  it('still checks the content as an Extension (ext-1), and other URLs of hl7.org stay unknown', () => {
    const both = {
      resourceType: 'Patient',
      extension: [
        {
          url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Patient.contact.additionalName',
          valueString: 'x',
          extension: [{ url: 'a', valueString: 'y' }],
        },
      ],
    };
    expect(errorPaths(both)).toEqual(['Patient.extension[0]']);
    const other = {
      resourceType: 'Patient',
      extension: [
        { url: 'http://hl7.org/fhir/5.0/StructureDefinition/not-a-cross-version-one', valueString: 'x' },
      ],
    };
    expect(issues(other)).toEqual(['error Patient.extension[0]']);
  });
});

describe('Coding.system names a code system by an absolute URI (datatypes.html#Coding, terminologies.html#4.1)', () => {
  const condition = (coding: object) => ({
    resourceType: 'Condition',
    subject: { reference: 'Patient/p1' },
    code: { coding: [coding] },
  });

  it('accepts absolute URIs: http, urn:oid and urn:uuid', () => {
    expect(errors(condition({ system: 'http://snomed.info/sct', code: '38341003' }))).toEqual([]);
    expect(errors(condition({ system: 'urn:oid:2.16.840.1.113883.6.96', code: '38341003' }))).toEqual([]);
    expect(
      errors(condition({ system: 'urn:uuid:5f3c1c7e-2a4b-4c8e-9d1f-0a1b2c3d4e5f', code: 'local-1' })),
    ).toEqual([]);
  });

  it('refuses a relative or local system at Coding.system', () => {
    expect(errorPaths(condition({ system: 'CodeSystem/local', code: 'a' }))).toEqual([
      'Condition.code.coding[0].system',
    ]);
    expect(errorPaths(condition({ system: '#cs1', code: 'a' }))).toEqual(['Condition.code.coding[0].system']);
    // Also on a Coding that is not in a CodeableConcept, and with no code.
    const observation = {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      valueCodeableConcept: { text: 'y' },
      meta: { tag: [{ system: 'tags', display: 'a tag' }] },
    };
    expect(errorPaths(observation)).toEqual(['Observation.meta.tag[0].system']);
  });

  it('refuses the URL of a loaded value set where a code system belongs', () => {
    // The R4 value set of administrative genders; its code system is http://hl7.org/fhir/administrative-gender.
    const vsUrl = 'http://hl7.org/fhir/ValueSet/administrative-gender';
    expect(errorPaths(condition({ system: vsUrl, code: 'male' }))).toEqual([
      'Condition.code.coding[0].system',
    ]);
    expect(errors(condition({ system: 'http://hl7.org/fhir/administrative-gender', code: 'male' }))).toEqual(
      [],
    );
  });
});

describe('Bundle links (http.html#paging, bundle.html#Bundle.link)', () => {
  const searchset = (link: object[], entryLink?: object[]) => ({
    resourceType: 'Bundle',
    type: 'searchset',
    link,
    entry: [
      {
        fullUrl: 'http://server.test/fhir/Patient/p1',
        resource: { resourceType: 'Patient', id: 'p1' },
        search: { mode: 'match' },
        ...(entryLink ? { link: entryLink } : {}),
      },
    ],
  });

  it('accepts one link per relation', () => {
    const links = [
      { relation: 'self', url: 'http://server.test/fhir/Patient?name=a' },
      { relation: 'next', url: 'http://server.test/fhir/Patient?name=a&page=2' },
      { relation: 'previous', url: 'http://server.test/fhir/Patient?name=a&page=0' },
    ];
    expect(errors(searchset(links))).toEqual([]);
  });

  it('refuses a relation given twice, at the second link, in Bundle.link and in an entry', () => {
    const twice = [
      { relation: 'self', url: 'http://server.test/fhir/Patient?name=a' },
      { relation: 'next', url: 'http://server.test/fhir/Patient?name=a&page=2' },
      { relation: 'next', url: 'http://server.test/fhir/Patient?name=a&page=3' },
    ];
    expect(errorPaths(searchset(twice))).toEqual(['Bundle.link[2].relation']);
    const entryLinks = [
      { relation: 'alternate', url: 'http://server.test/a' },
      { relation: 'alternate', url: 'http://server.test/b' },
    ];
    expect(
      errorPaths(searchset([{ relation: 'self', url: 'http://server.test/fhir/Patient' }], entryLinks)),
    ).toEqual(['Bundle.entry[0].link[1].relation']);
  });
});

describe('Quantity minValue/maxValue after UCUM conversion (elementdefinition-definitions.html#ElementDefinition.minValue_x_)', () => {
  const ucum = 'http://unitsofmeasure.org';
  // A profile bounding a dose quantity between 10 g and 2 kg.
  const dose = createFhirValidatorSync();
  dose.registerResource({
    resourceType: 'StructureDefinition',
    url: 'http://hie.example.net/fhir/StructureDefinition/bounded-dose',
    name: 'BoundedDose',
    status: 'active',
    kind: 'resource',
    abstract: false,
    type: 'Observation',
    baseDefinition: 'http://hl7.org/fhir/StructureDefinition/Observation',
    derivation: 'constraint',
    differential: {
      element: [
        { id: 'Observation', path: 'Observation' },
        {
          id: 'Observation.value[x]',
          path: 'Observation.value[x]',
          type: [{ code: 'Quantity' }],
          minValueQuantity: { value: 10, system: ucum, code: 'g' },
          maxValueQuantity: { value: 2, system: ucum, code: 'kg' },
        },
      ],
    },
  });
  const profile = ['http://hie.example.net/fhir/StructureDefinition/bounded-dose'];
  const observation = (valueQuantity: object) => ({
    resourceType: 'Observation',
    status: 'final',
    code: { text: 'dose' },
    valueQuantity,
  });
  const paths = (q: object) => errorPaths(observation(q), profile, dose);

  it('accepts values inside the bounds in other units of mass', () => {
    expect(paths({ value: 500, system: ucum, code: 'g' })).toEqual([]);
    expect(paths({ value: 0.5, system: ucum, code: 'kg' })).toEqual([]);
    expect(paths({ value: 20000, system: ucum, code: 'mg' })).toEqual([]);
    expect(paths({ value: 3, system: ucum, code: '[lb_av]' })).toEqual([]); // 1.36 kg
  });

  it('refuses 100 mg under a 10 g minimum and 3 kg over a 2 kg maximum', () => {
    const at = ['Observation.value.ofType(Quantity)'];
    expect(paths({ value: 100, system: ucum, code: 'mg' })).toEqual(at);
    expect(paths({ value: 3, system: ucum, code: 'kg' })).toEqual(at);
    expect(paths({ value: 2500, system: ucum, code: 'g' })).toEqual(at);
    expect(paths({ value: 5, system: ucum, code: '[lb_av]' })).toEqual(at); // 2.27 kg
  });

  it('does not compare units of another kind or of another system (a warning, not an error)', () => {
    expect(paths({ value: 1, system: ucum, code: 'mL' })).toEqual([]);
    const warnings = dose
      .validate(observation({ value: 1, system: ucum, code: 'mL' }), { profiles: profile })
      .issues.filter((i) => i.severity === 'warning' && i.diagnostics?.includes('cannot be compared'));
    expect(warnings.length).toBe(2);
    expect(paths({ value: 1, system: 'http://snomed.info/sct', code: '258682000' })).toEqual([]);
  });
});

describe('narrative entities (narrative.html#xhtml; XML 1.0 sections 2.4 and 4.6)', () => {
  const patient = (div: string) => ({
    resourceType: 'Patient',
    text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${div}</div>` },
  });

  it('accepts the five XML entities and numeric character references', () => {
    expect(
      errors(patient('<p>a &amp; b &lt; c &gt; d &quot;e&quot; &apos;f&apos; &#160;g&#xA0;</p>')),
    ).toEqual([]);
    expect(errors(patient('<a href="https://server.test/x?a=1&amp;b=2">link</a>'))).toEqual([]);
  });

  it('refuses HTML entities XML does not define, and a bare &, in text and attributes', () => {
    for (const div of [
      '<p>a&nbsp;b</p>',
      '<p>&copy; 2020</p>',
      '<p>Smith & Sons</p>',
      '<a href="x?a=1&b=2">l</a>',
    ])
      expect(errorPaths(patient(div))).toEqual(['Patient.text.div']);
  });
});

describe('HTML in plain strings (datatypes.html#string; the security-checks mode)', () => {
  const patient = (text: string) => ({ resourceType: 'Patient', name: [{ text }] });
  const secure = createFhirValidatorSync({ securityChecks: true });
  const htmlIssues = (v: ReturnType<typeof createFhirValidatorSync>, text: string) =>
    v
      .validate(patient(text))
      .issues.filter((i) => i.diagnostics?.includes('embedded HTML'))
      .map((i) => `${i.severity} ${i.expression?.[0]}`);

  it('is information by default and an error with security checks, at the string', () => {
    expect(htmlIssues(createFhirValidatorSync(), 'Ann <b>Smith</b>')).toEqual([
      'information Patient.name[0].text',
    ]);
    expect(htmlIssues(secure, 'Ann <script>x()</script>')).toEqual(['error Patient.name[0].text']);
    expect(htmlIssues(secure, 'Ann <img src="x.png"/>')).toEqual(['error Patient.name[0].text']);
  });

  it('does not take comparisons for tags', () => {
    expect(htmlIssues(secure, 'dose < 5 mg and > 2 mg')).toEqual([]);
    expect(htmlIssues(secure, 'score <5')).toEqual([]);
  });
});

describe('HTML in markdown (datatypes.html#markdown; the reference validator -html-in-markdown)', () => {
  // Annotation.text is markdown.
  const guidance = (text: string) => ({
    resourceType: 'Observation',
    status: 'final',
    code: { text: 'x' },
    note: [{ text }],
  });
  const markdownIssues = (
    v: ReturnType<typeof createFhirValidatorSync>,
    text: string,
    htmlInMarkdown?: 'ignore' | 'warning' | 'error',
  ) =>
    v
      .validate(guidance(text), htmlInMarkdown ? { settings: { htmlInMarkdown } } : {})
      .issues.filter((i) => i.diagnostics?.includes('markdown contains'))
      .map((i) => `${i.severity} ${i.expression?.[0]}`);

  it('is a warning by default, an error or nothing when asked, at the markdown element', () => {
    const v = validator();
    expect(markdownIssues(v, 'Take <b>two</b> daily')).toEqual(['warning Observation.note[0].text']);
    expect(markdownIssues(v, 'Take <b>two</b> daily', 'error')).toEqual(['error Observation.note[0].text']);
    expect(markdownIssues(v, 'Take <b>two</b> daily', 'ignore')).toEqual([]);
    expect(
      markdownIssues(createFhirValidatorSync({ htmlInMarkdown: 'error' }), '<script>x()</script>'),
    ).toEqual(['error Observation.note[0].text']);
  });

  it('does not take markdown syntax or comparisons for HTML', () => {
    expect(markdownIssues(validator(), '**two** daily, dose < 5 mg and > 2 mg', 'error')).toEqual([]);
  });
});

describe('settings chosen per validation (ValidationOptions.settings, $validate parameters)', () => {
  const v = createFhirValidatorSync();
  const patient = {
    resourceType: 'Patient',
    name: [{ text: 'Ann <b>Smith</b>' }],
    extension: [{ url: 'https://ehr.example.net/fhir/ext/a', valueString: 'x' }],
  };
  const issuesOf = (settings?: object) =>
    v
      .validate(patient, settings ? { settings } : {})
      .issues.filter((i) => i.expression?.[0]?.startsWith('Patient.'))
      .map((i) => `${i.severity} ${i.expression?.[0]}`)
      .sort();

  it("override the validator's settings for one run only", () => {
    expect(issuesOf()).toEqual(['information Patient.name[0].text', 'warning Patient.extension[0]']);
    expect(issuesOf({ securityChecks: true, unknownExtensionSeverity: 'error' })).toEqual([
      'error Patient.extension[0]',
      'error Patient.name[0].text',
    ]);
    expect(issuesOf({ allowedExtensionDomains: ['https://ehr.example.net/fhir/'] })).toEqual([
      'information Patient.name[0].text',
    ]);
    // The next run without settings has the validator's own again.
    expect(issuesOf()).toEqual(['information Patient.name[0].text', 'warning Patient.extension[0]']);
  });
});

describe('paging links only in searchsets and histories (http.html#paging)', () => {
  const bundle = (type: string, relation: string) => ({
    resourceType: 'Bundle',
    type,
    link: [
      { relation: 'self', url: 'http://server.test/fhir/x' },
      { relation, url: 'http://server.test/fhir/x?page=2' },
    ],
  });

  it('accepts next/previous/first/last in searchsets and histories', () => {
    for (const relation of ['next', 'previous', 'first', 'last']) {
      expect(errors(bundle('searchset', relation))).toEqual([]);
      expect(errors(bundle('history', relation))).toEqual([]);
    }
  });

  it('refuses them in collections, batches and transactions, and accepts other relations there', () => {
    for (const type of ['collection', 'batch', 'transaction'])
      expect(errorPaths(bundle(type, 'next'))).toEqual(['Bundle.link[1].relation']);
    expect(errors(bundle('collection', 'alternate'))).toEqual([]);
  });
});

describe('internal narrative hyperlinks (narrative.html; HTML 4.01 section 12.2.3)', () => {
  const xhtml = (body: string) => `<div xmlns="http://www.w3.org/1999/xhtml">${body}</div>`;

  it('resolves a link to an id or an anchor name in the same narrative', () => {
    const patient = {
      resourceType: 'Patient',
      text: {
        status: 'generated',
        div: xhtml('<p><a href="#n1">names</a> <a href="#a2">x</a></p><p id="n1">Ann</p><a name="a2">y</a>'),
      },
    };
    expect(errors(patient)).toEqual([]);
  });

  it('resolves across the narratives of a Bundle, forwards and backwards', () => {
    const bundle = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        {
          fullUrl: 'urn:uuid:8c0b5e2a-1f3d-4b6a-9c2e-5d7f8a9b0c1d',
          resource: {
            resourceType: 'Patient',
            text: { status: 'generated', div: xhtml('<p id="pat">Ann</p><a href="#obs">obs</a>') },
          },
        },
        {
          fullUrl: 'urn:uuid:1d2e3f40-5a6b-4c7d-8e9f-0a1b2c3d4e5f',
          resource: {
            resourceType: 'Basic',
            code: { text: 'note' },
            text: { status: 'generated', div: xhtml('<p id="obs">note</p><a href="#pat">patient</a>') },
          },
        },
      ],
    };
    expect(errors(bundle)).toEqual([]);
  });

  it('warns of a link that finds no anchor, at the div (not an error: see resolveNarrativeLinks)', () => {
    const patient = {
      resourceType: 'Patient',
      text: {
        status: 'generated',
        div: xhtml('<p><a href="#missing">see</a> <a href="https://server.test/#top">ext</a></p>'),
      },
    };
    const found = validator()
      .validate(patient)
      .issues.filter((i) => i.diagnostics?.includes('Hyperlink'))
      .map((i) => `${i.severity} ${i.expression?.[0]}`);
    expect(found).toEqual(['warning Patient.text.div']);
    expect(errors(patient)).toEqual([]);
  });
});

describe('extension contexts (extensibility.html#context; StructureDefinition.context, contextInvariant)', () => {
  const v = createFhirValidatorSync({ unknownExtensionSeverity: 'error' });
  const local = (id: string, context: object[], extra: object = {}) => ({
    resourceType: 'StructureDefinition',
    url: `http://example.net/fhir/StructureDefinition/${id}`,
    name: id.replace(/-/g, ''),
    status: 'draft',
    kind: 'complex-type',
    abstract: false,
    type: 'Extension',
    baseDefinition: 'http://hl7.org/fhir/StructureDefinition/Extension',
    derivation: 'constraint',
    context,
    differential: {
      element: [
        { id: 'Extension', path: 'Extension' },
        {
          id: 'Extension.url',
          path: 'Extension.url',
          fixedUri: `http://example.net/fhir/StructureDefinition/${id}`,
        },
        { id: 'Extension.value[x]', path: 'Extension.value[x]', type: [{ code: 'string' }] },
      ],
    },
    ...extra,
  });
  v.registerResource(local('on-domain-resource', [{ type: 'element', expression: 'DomainResource' }]));
  v.registerResource(local('on-contact', [{ type: 'fhirpath', expression: 'Patient.contact' }]));
  v.registerResource(
    local('inside-other', [
      { type: 'extension', expression: 'http://example.net/fhir/StructureDefinition/on-domain-resource' },
    ]),
  );
  const ext = (name: string, value: object = { valueString: 'x' }) => ({
    url: name.includes(':') ? name : `http://example.net/fhir/StructureDefinition/${name}`,
    ...value,
  });
  const birthPlace = ext('http://hl7.org/fhir/StructureDefinition/patient-birthPlace', {
    valueAddress: { city: 'Lyon' },
  });
  const paths = (resource: object) => errorPaths(resource, undefined, v);

  it('accepts an extension on the resource its context names, and refuses it elsewhere, at the element holding it', () => {
    expect(paths({ resourceType: 'Patient', extension: [birthPlace] })).toEqual([]);
    const obs = {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      extension: [birthPlace],
    };
    expect(paths(obs)).toEqual(['Observation']);
    expect(errors(obs, undefined, v)[0].diagnostics).toContain('is not allowed to be used at this point');
  });

  it('reads a data type name as anywhere that type is used, and an element path of a data type likewise', () => {
    const language = ext('http://hl7.org/fhir/StructureDefinition/language', { valueCode: 'fr' });
    expect(paths({ resourceType: 'Patient', name: [{ family: 'A', extension: [language] }] })).toEqual([]);
    expect(paths({ resourceType: 'Patient', identifier: [{ value: '1', extension: [language] }] })).toEqual([
      'Patient.identifier[0]',
    ]);
    // humanname-fathers-family: context HumanName.family, on the primitive through `_family`.
    const fathers = ext('http://hl7.org/fhir/StructureDefinition/humanname-fathers-family');
    expect(
      paths({ resourceType: 'Patient', name: [{ family: 'A', _family: { extension: [fathers] } }] }),
    ).toEqual([]);
    expect(
      paths({ resourceType: 'Patient', name: [{ given: ['A'], _given: [{ extension: [fathers] }] }] }),
    ).toEqual(['Patient.name[0].given[0]']);
  });

  it('admits Element everywhere, and a base type (DomainResource) for the types derived from it', () => {
    const absent = ext('http://hl7.org/fhir/StructureDefinition/data-absent-reason', {
      valueCode: 'unknown',
    });
    expect(paths({ resourceType: 'Patient', _birthDate: { extension: [absent] } })).toEqual([]);
    expect(paths({ resourceType: 'Patient', extension: [ext('on-domain-resource')] })).toEqual([]);
    expect(
      paths({ resourceType: 'Patient', name: [{ family: 'A', extension: [ext('on-domain-resource')] }] }),
    ).toEqual(['Patient.name[0]']);
  });

  it('checks extension contexts (inside the named extension) and FHIRPath contexts (the elements selected)', () => {
    const nested = { url: ext('on-domain-resource').url, extension: [ext('inside-other')] };
    expect(paths({ resourceType: 'Patient', extension: [nested] })).toEqual([]);
    expect(paths({ resourceType: 'Patient', extension: [ext('inside-other')] })).toEqual(['Patient']);
    expect(
      paths({
        resourceType: 'Patient',
        contact: [{ name: { family: 'B' }, extension: [ext('on-contact')] }],
      }),
    ).toEqual([]);
    expect(paths({ resourceType: 'Patient', extension: [ext('on-contact')] })).toEqual(['Patient']);
  });

  it('reads a recursive element (contentReference) as the element it refers to', () => {
    // timing-daysOfCycle: context PlanDefinition.action; PlanDefinition.action.action is a PlanDefinition.action.
    const days = ext('http://hl7.org/fhir/StructureDefinition/timing-daysOfCycle', {
      extension: [{ url: 'day', valueInteger: 1 }],
    });
    const plan = (action: object) => ({ resourceType: 'PlanDefinition', status: 'draft', action: [action] });
    expect(paths(plan({ title: 'a', action: [{ title: 'b', extension: [days] }] }))).toEqual([]);
    expect(paths(plan({ title: 'a', participant: [{ type: 'patient', extension: [days] }] }))).toEqual([
      'PlanDefinition.action[0].participant[0]',
    ]);
  });

  it('requires the context invariants to hold on the element holding the extension', () => {
    // questionnaire-hidden: any item; questionnaire-minOccurs: not on display items (its contextInvariant).
    const minOccurs = ext('http://hl7.org/fhir/StructureDefinition/questionnaire-minOccurs', {
      valueInteger: 1,
    });
    const q = (item: object) => ({ resourceType: 'Questionnaire', status: 'draft', item: [item] });
    expect(paths(q({ linkId: 'a', type: 'string', required: true, extension: [minOccurs] }))).toEqual([]);
    expect(paths(q({ linkId: 'a', type: 'display', text: 'Hello', extension: [minOccurs] }))).toEqual([
      'Questionnaire.item[0]',
    ]);
  });

  it('refuses a modifier extension used as an extension, and a regular one used as a modifier', () => {
    const doNotPerform = ext('http://hl7.org/fhir/StructureDefinition/request-doNotPerform', {
      valueBoolean: true,
    });
    const order = (more: object) => ({
      resourceType: 'NutritionOrder',
      status: 'active',
      intent: 'order',
      patient: { reference: 'Patient/p' },
      dateTime: '2020-01-01',
      ...more,
    });
    expect(paths(order({ modifierExtension: [doNotPerform] }))).toEqual([]);
    // Located at the extension qualified by its url, as the reference validator locates this rule.
    expect(paths(order({ extension: [doNotPerform] }))).toEqual([
      "NutritionOrder.extension[0][url='http://hl7.org/fhir/StructureDefinition/request-doNotPerform']",
    ]);
    expect(paths({ resourceType: 'Patient', modifierExtension: [birthPlace] })).toEqual([
      "Patient.modifierExtension[0][url='http://hl7.org/fhir/StructureDefinition/patient-birthPlace']",
    ]);
  });
});

describe('unknown extensions (extensibility.html#exchange; the reference validator settings)', () => {
  const severityAt = (v: ReturnType<typeof createFhirValidatorSync>, url: string) =>
    v
      .validate({ resourceType: 'Patient', extension: [{ url, valueString: 'x' }] })
      .issues.filter((i) => i.expression?.[0]?.startsWith('Patient.extension'))
      .map((i) => i.severity);

  it('is the configured severity, except in allowed domains, DICOM and the FHIR tooling extensions', () => {
    const v = createFhirValidatorSync({
      unknownExtensionSeverity: 'error',
      allowedExtensionDomains: ['https://fhir.example.net/ext/'],
    });
    expect(severityAt(v, 'https://other.net/fhir/x')).toEqual(['error']);
    expect(severityAt(v, 'https://fhir.example.net/ext/a')).toEqual([]);
    expect(severityAt(v, 'http://dicom.nema.org/x')).toEqual([]);
    expect(severityAt(v, 'http://hl7.org/fhir/tools/StructureDefinition/x')).toEqual([]);
    // Example domains: refused unless examples are allowed.
    expect(severityAt(v, 'http://example.org/x')).toContain('error');
    const examples = createFhirValidatorSync({ unknownExtensionSeverity: 'error', allowExampleUrls: true });
    expect(severityAt(examples, 'http://example.org/x')).toEqual([]);
  });

  it('reports HL7 extensions published after R4 (extensions package, not loaded) as not checked', () => {
    const v = createFhirValidatorSync({ unknownExtensionSeverity: 'error' });
    expect(severityAt(v, 'http://hl7.org/fhir/StructureDefinition/patient-published-later')).toEqual([
      'warning',
    ]);
  });
});

describe('slicing (profiling.html#slicing: discriminators, ordered, rules, re-slicing)', () => {
  const v = createFhirValidatorSync();
  const profile = (id: string, type: string, elements: object[]) => {
    const url = `http://example.net/fhir/StructureDefinition/${id}`;
    v.registerResource({
      resourceType: 'StructureDefinition',
      url,
      name: id.replace(/-/g, ''),
      status: 'draft',
      kind: 'resource',
      abstract: false,
      type,
      baseDefinition: `http://hl7.org/fhir/StructureDefinition/${type}`,
      derivation: 'constraint',
      differential: { element: elements },
    });
    return url;
  };
  const identifierSlices = (rules: string, ordered: boolean) => [
    {
      id: 'Patient.identifier',
      path: 'Patient.identifier',
      slicing: { discriminator: [{ type: 'value', path: 'system' }], ordered, rules },
    },
    { id: 'Patient.identifier:mrn', path: 'Patient.identifier', sliceName: 'mrn', max: '1' },
    { id: 'Patient.identifier:mrn.system', path: 'Patient.identifier.system', min: 1, fixedUri: 'urn:mrn' },
    { id: 'Patient.identifier:ssn', path: 'Patient.identifier', sliceName: 'ssn', max: '1' },
    { id: 'Patient.identifier:ssn.system', path: 'Patient.identifier.system', min: 1, fixedUri: 'urn:ssn' },
  ];
  const mrn = { system: 'urn:mrn', value: '1' };
  const ssn = { system: 'urn:ssn', value: '2' };
  const other = { system: 'urn:other', value: '3' };
  const patient = (identifier: object[]) => ({ resourceType: 'Patient', identifier });

  it('ordered slicing: matched items in the order of the slices', () => {
    const url = profile('ordered-closed', 'Patient', identifierSlices('closed', true));
    expect(errorPaths(patient([mrn, ssn]), [url], v)).toEqual([]);
    expect(errorPaths(patient([ssn, mrn]), [url], v)).toEqual(['Patient.identifier[1]']);
    expect(errorPaths(patient([mrn, other]), [url], v)).toEqual(['Patient.identifier[1]']);
  });

  it('openAtEnd: items in no slice only after the sliced ones; open: anywhere', () => {
    const atEnd = profile('open-at-end', 'Patient', identifierSlices('openAtEnd', false));
    expect(errorPaths(patient([ssn, mrn, other]), [atEnd], v)).toEqual([]);
    expect(errorPaths(patient([other, mrn]), [atEnd], v)).toEqual(['Patient.identifier[1]']);
    const open = profile('open-anywhere', 'Patient', identifierSlices('open', false));
    expect(errorPaths(patient([other, mrn]), [open], v)).toEqual([]);
  });

  it('a slice that does not constrain one of the discriminators is not restricted by it', () => {
    const url = profile('partial-discriminator', 'Patient', [
      {
        id: 'Patient.identifier',
        path: 'Patient.identifier',
        slicing: {
          discriminator: [
            { type: 'value', path: 'system' },
            { type: 'value', path: 'use' },
          ],
          rules: 'closed',
        },
      },
      { id: 'Patient.identifier:official', path: 'Patient.identifier', sliceName: 'official', min: 1 },
      {
        id: 'Patient.identifier:official.use',
        path: 'Patient.identifier.use',
        min: 1,
        fixedCode: 'official',
      },
    ]);
    expect(errorPaths(patient([{ use: 'official', system: 'urn:any', value: '1' }]), [url], v)).toEqual([]);
    expect(errorPaths(patient([{ use: 'usual', system: 'urn:any', value: '1' }]), [url], v)).toEqual([
      'Patient.identifier[0]',
      'Patient',
    ]);
  });

  it('re-slicing: the items of a slice are sliced again by its own slicing', () => {
    const url = profile('resliced', 'Patient', [
      {
        id: 'Patient.identifier',
        path: 'Patient.identifier',
        slicing: { discriminator: [{ type: 'value', path: 'system' }], rules: 'open' },
      },
      {
        id: 'Patient.identifier:mrn',
        path: 'Patient.identifier',
        sliceName: 'mrn',
        slicing: { discriminator: [{ type: 'value', path: 'use' }], rules: 'open' },
      },
      { id: 'Patient.identifier:mrn.system', path: 'Patient.identifier.system', min: 1, fixedUri: 'urn:mrn' },
      {
        id: 'Patient.identifier:mrn/official',
        path: 'Patient.identifier',
        sliceName: 'mrn/official',
        min: 1,
      },
      {
        id: 'Patient.identifier:mrn/official.use',
        path: 'Patient.identifier.use',
        min: 1,
        fixedCode: 'official',
      },
    ]);
    expect(errorPaths(patient([{ ...mrn, use: 'official' }]), [url], v)).toEqual([]);
    expect(errorPaths(patient([{ ...mrn, use: 'usual' }]), [url], v)).toEqual(['Patient']);
  });

  it('does not apply the slices of Parameters.parameter to the recursive Parameters.parameter.part', () => {
    const url = profile('one-parameter', 'Parameters', [
      {
        id: 'Parameters.parameter',
        path: 'Parameters.parameter',
        slicing: { discriminator: [{ type: 'value', path: 'name' }], rules: 'closed' },
      },
      { id: 'Parameters.parameter:a', path: 'Parameters.parameter', sliceName: 'a', min: 1, max: '1' },
      { id: 'Parameters.parameter:a.name', path: 'Parameters.parameter.name', fixedString: 'a' },
    ]);
    const params = (parameter: object[]) => ({ resourceType: 'Parameters', parameter });
    const withPart = {
      name: 'a',
      part: [
        { name: 'x', valueString: '1' },
        { name: 'y', valueString: '2' },
      ],
    };
    expect(errorPaths(params([withPart]), [url], v)).toEqual([]);
    expect(errorPaths(params([withPart, { name: 'b', valueString: '1' }]), [url], v)).toEqual([
      'Parameters.parameter[1]',
    ]);
  });
});

describe('Bundle references and entry profiles (bundle.html#references, documents.html, http.html#trules)', () => {
  const v = createFhirValidatorSync();
  const patient = (id: string) => ({ resourceType: 'Patient', id, active: true });
  const composition = (more: object) => ({
    resourceType: 'Composition',
    id: 'c',
    status: 'final',
    type: { text: 'note' },
    date: '2020-01-01',
    title: 'Note',
    ...more,
  });
  const document = (comp: object, entries: object[]) => ({
    resourceType: 'Bundle',
    type: 'document',
    identifier: { system: 'urn:ietf:rfc:3986', value: 'urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0' },
    timestamp: '2020-01-01T00:00:00Z',
    entry: [{ fullUrl: 'http://x.org/fhir/Composition/c', resource: comp }, ...entries],
  });

  it("resolves a document Composition's references to entries (relative against the Composition's base)", () => {
    const comp = composition({ subject: { reference: 'Patient/p' }, author: [{ reference: 'Patient/p' }] });
    const ok = document(comp, [{ fullUrl: 'http://x.org/fhir/Patient/p', resource: patient('p') }]);
    expect(errorPaths(ok, undefined, v)).toEqual([]);
    const missing = document(
      composition({
        subject: { reference: 'Patient/p' },
        author: [{ reference: 'Patient/q' }],
        section: [{ title: 's', entry: [{ reference: 'http://x.org/fhir/Patient/z' }] }],
      }),
      [{ fullUrl: 'http://x.org/fhir/Patient/p', resource: patient('p') }],
    );
    expect(errorPaths(missing, undefined, v)).toEqual([
      'Bundle.entry[0].resource.author[0]',
      'Bundle.entry[0].resource.section[0].entry[0]',
    ]);
  });

  it('requires urn:uuid references of a transaction to name an entry (elsewhere a warning)', () => {
    const tx = (ref: string) => ({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          fullUrl: 'urn:uuid:6a1f4fc0-4c7a-4a4d-9d0b-8c2b7b6c1a01',
          resource: patient('p'),
          request: { method: 'POST', url: 'Patient' },
        },
        {
          fullUrl: 'urn:uuid:6a1f4fc0-4c7a-4a4d-9d0b-8c2b7b6c1a02',
          resource: {
            resourceType: 'Observation',
            status: 'final',
            code: { text: 'x' },
            subject: { reference: ref },
          },
          request: { method: 'POST', url: 'Observation' },
        },
      ],
    });
    expect(errorPaths(tx('urn:uuid:6a1f4fc0-4c7a-4a4d-9d0b-8c2b7b6c1a01'), undefined, v)).toEqual([]);
    expect(errorPaths(tx('urn:uuid:6a1f4fc0-4c7a-4a4d-9d0b-8c2b7b6c1a09'), undefined, v)).toEqual([
      'Bundle.entry[1].resource.subject',
    ]);
    // In a collection it is a warning (the reference validator's "not locally contained").
    const collection = { ...tx('urn:uuid:6a1f4fc0-4c7a-4a4d-9d0b-8c2b7b6c1a09'), type: 'collection' };
    for (const e of collection.entry) delete (e as { request?: unknown }).request;
    const out = v.validate(collection);
    expect(out.valid).toBe(true);
    expect(out.issues.filter((i) => i.severity === 'warning').map((i) => i.expression?.[0])).toContain(
      'Bundle.entry[1].resource.subject',
    );
  });

  it('checks an entry against the profile its element requires, and slices discriminated by profile', () => {
    const active = 'http://example.net/fhir/StructureDefinition/active-patient';
    v.registerResource({
      resourceType: 'StructureDefinition',
      url: active,
      name: 'ActivePatient',
      status: 'draft',
      kind: 'resource',
      abstract: false,
      type: 'Patient',
      baseDefinition: 'http://hl7.org/fhir/StructureDefinition/Patient',
      derivation: 'constraint',
      differential: {
        element: [
          { id: 'Patient', path: 'Patient' },
          { id: 'Patient.active', path: 'Patient.active', min: 1, fixedBoolean: true },
        ],
      },
    });
    const bundleProfile = 'http://example.net/fhir/StructureDefinition/active-patients';
    v.registerResource({
      resourceType: 'StructureDefinition',
      url: bundleProfile,
      name: 'ActivePatients',
      status: 'draft',
      kind: 'resource',
      abstract: false,
      type: 'Bundle',
      baseDefinition: 'http://hl7.org/fhir/StructureDefinition/Bundle',
      derivation: 'constraint',
      differential: {
        element: [
          { id: 'Bundle', path: 'Bundle' },
          {
            id: 'Bundle.entry',
            path: 'Bundle.entry',
            slicing: { discriminator: [{ type: 'profile', path: 'resource' }], rules: 'closed' },
          },
          { id: 'Bundle.entry:patient', path: 'Bundle.entry', sliceName: 'patient', min: 1 },
          {
            id: 'Bundle.entry:patient.resource',
            path: 'Bundle.entry.resource',
            type: [{ code: 'Patient', profile: [active] }],
          },
        ],
      },
    });
    const collection = (p: object) => ({
      resourceType: 'Bundle',
      type: 'collection',
      entry: [{ fullUrl: 'http://x.org/fhir/Patient/p', resource: p }],
    });
    expect(errorPaths(collection(patient('p')), [bundleProfile], v)).toEqual([]);
    const inactive = { ...patient('p'), active: false };
    expect(errorPaths(collection(inactive), [bundleProfile], v)).toEqual(['Bundle.entry[0]', 'Bundle']);
    // A slice is matched under the settings of the validation it serves: an unknown extension that this run
    // makes an error keeps the entry out of the slice.
    const extended = {
      ...patient('p'),
      extension: [{ url: 'https://ehr.example.net/ext/x', valueString: 'y' }],
    };
    expect(errorPaths(collection(extended), [bundleProfile], v)).toEqual([]);
    const strict = v.validate(collection(extended), {
      profiles: [bundleProfile],
      settings: { unknownExtensionSeverity: 'error' },
    });
    expect(strict.issues.filter((i) => i.severity === 'error').map((i) => i.expression?.[0])).toEqual(
      expect.arrayContaining(['Bundle.entry[0].resource.extension[0]', 'Bundle.entry[0]']),
    );
    // Without slicing: the resource element's type profile alone (ElementDefinition.type.profile).
    const typed = 'http://example.net/fhir/StructureDefinition/active-patients-typed';
    v.registerResource({
      resourceType: 'StructureDefinition',
      url: typed,
      name: 'ActivePatientsTyped',
      status: 'draft',
      kind: 'resource',
      abstract: false,
      type: 'Bundle',
      baseDefinition: 'http://hl7.org/fhir/StructureDefinition/Bundle',
      derivation: 'constraint',
      differential: {
        element: [
          { id: 'Bundle', path: 'Bundle' },
          {
            id: 'Bundle.entry.resource',
            path: 'Bundle.entry.resource',
            type: [{ code: 'Patient', profile: [active] }],
          },
        ],
      },
    });
    expect(errorPaths(collection(patient('p')), [typed], v)).toEqual([]);
    expect(errorPaths(collection(inactive), [typed], v)).toEqual(['Bundle.entry[0].resource.active']);
  });
});

describe('codes of loaded code systems (codesystem.html#CodeSystem.content, .caseSensitive, .version)', () => {
  const v = createFhirValidatorSync();
  const codeSystem = (url: string, more: object) => ({
    resourceType: 'CodeSystem',
    url,
    version: '1.0',
    status: 'active',
    content: 'complete',
    concept: [
      {
        code: 'Red',
        display: 'Red colour',
        designation: [{ language: 'fr', value: 'Rouge' }],
        concept: [{ code: 'Dark', display: 'Dark red' }],
      },
    ],
    ...more,
  });
  v.registerResource(codeSystem('http://example.net/cs/colours', {}));
  v.registerResource(codeSystem('http://example.net/cs/colours-nocase', { caseSensitive: false }));
  v.registerResource(codeSystem('http://example.net/cs/colours-fragment', { content: 'fragment' }));
  const obs = (coding: object) => ({
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [coding] },
  });
  const issuesAt = (coding: object) =>
    v
      .validate(obs(coding))
      .issues.filter((i) => i.expression?.[0]?.startsWith('Observation.code'))
      .map((i) => `${i.severity} ${i.expression?.[0]}`);

  it('accepts codes of a complete code system, nested ones too, and refuses unknown codes at .code', () => {
    expect(issuesAt({ system: 'http://example.net/cs/colours', code: 'Dark' })).toEqual([]);
    expect(issuesAt({ system: 'http://example.net/cs/colours', code: 'Blue' })).toEqual([
      'error Observation.code.coding[0].code',
    ]);
    // Case matters unless the code system says caseSensitive: false.
    expect(issuesAt({ system: 'http://example.net/cs/colours', code: 'red' })).toEqual([
      'error Observation.code.coding[0].code',
    ]);
    expect(issuesAt({ system: 'http://example.net/cs/colours-nocase', code: 'red' })).toEqual([]);
  });

  it('does not judge codes of a fragment, or of another version than the one loaded', () => {
    expect(issuesAt({ system: 'http://example.net/cs/colours-fragment', code: 'Blue' })).toEqual([]);
    expect(issuesAt({ system: 'http://example.net/cs/colours', version: '2.0', code: 'Blue' })).toEqual([]);
    expect(issuesAt({ system: 'http://example.net/cs/colours', version: '1.0', code: 'Blue' })).toEqual([
      'error Observation.code.coding[0].code',
    ]);
  });

  it('warns of a display that is neither the display nor a designation, at .display', () => {
    const red = { system: 'http://example.net/cs/colours', code: 'Red' };
    expect(issuesAt({ ...red, display: 'Red colour' })).toEqual([]);
    expect(issuesAt({ ...red, display: 'Rouge' })).toEqual([]);
    expect(issuesAt({ ...red, display: 'Green' })).toEqual(['warning Observation.code.coding[0].display']);
  });
});

describe('ImplementationGuide.global profiles (implementationguide.html#ImplementationGuide.global)', () => {
  it('applies a loaded guide’s global profile to every instance of its type, and only then', () => {
    const v = createFhirValidatorSync();
    const profile = 'http://example.net/fhir/StructureDefinition/named-patient';
    v.registerResource({
      resourceType: 'StructureDefinition',
      url: profile,
      name: 'NamedPatient',
      status: 'draft',
      kind: 'resource',
      abstract: false,
      type: 'Patient',
      baseDefinition: 'http://hl7.org/fhir/StructureDefinition/Patient',
      derivation: 'constraint',
      differential: {
        element: [
          { id: 'Patient', path: 'Patient' },
          { id: 'Patient.name', path: 'Patient.name', min: 1 },
        ],
      },
    });
    const anonymous = { resourceType: 'Patient', active: true };
    expect(errorPaths(anonymous, undefined, v)).toEqual([]);
    v.registerResource({
      resourceType: 'ImplementationGuide',
      url: 'http://example.net/fhir/ImplementationGuide/net',
      name: 'Net',
      status: 'draft',
      packageId: 'example.net',
      fhirVersion: ['4.0.1'],
      global: [{ type: 'Patient', profile }],
    });
    expect(errorPaths(anonymous, undefined, v)).toEqual(['Patient']);
    expect(errorPaths({ ...anonymous, name: [{ family: 'A' }] }, undefined, v)).toEqual([]);
    // Other types are not concerned.
    expect(errorPaths({ resourceType: 'Organization', name: 'O' }, undefined, v)).toEqual([]);
  });
});

describe('cross-resource rules of conformance resources (errors in $validate, warnings on writes)', () => {
  const v = createFhirValidatorSync();
  v.registerResource({
    resourceType: 'SearchParameter',
    url: 'http://example.net/fhir/SearchParameter/patient-family',
    name: 'family',
    status: 'active',
    description: 'x',
    code: 'family',
    base: ['Patient'],
    type: 'string',
    expression: 'Patient.name.family',
  });
  v.registerResource({
    resourceType: 'Measure',
    url: 'http://example.net/fhir/Measure/m',
    status: 'active',
    scoring: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/measure-scoring', code: 'proportion' }],
    },
    group: [
      {
        code: { text: 'g1' },
        population: [
          {
            code: { coding: [{ system: 'http://x.org/p', code: 'numerator' }] },
            criteria: { language: 'text/cql', expression: 'N' },
          },
        ],
        stratifier: [{ code: { text: 'age' }, criteria: { language: 'text/cql', expression: 'A' } }],
      },
    ],
  });
  const at = (resource: object, severity: 'error' | 'warning') =>
    v
      .validate(resource, severity === 'error' ? { crossResourceSeverity: 'error' } : {})
      .issues.filter((i) => i.severity === severity && i.code === 'business-rule')
      .map((i) => i.expression?.[0]);

  it('a SearchParameter has the type of the one it is derived from, and its bases (warning)', () => {
    const derived = (type: string, base: string[]) => ({
      resourceType: 'SearchParameter',
      url: 'http://example.net/fhir/SearchParameter/d',
      name: 'd',
      status: 'active',
      description: 'x',
      code: 'd',
      base,
      type,
      expression: `${base[0]}.name.family`,
      derivedFrom: 'http://example.net/fhir/SearchParameter/patient-family',
    });
    expect(at(derived('string', ['Patient']), 'error')).toEqual([]);
    expect(at(derived('token', ['Patient']), 'error')).toEqual(['SearchParameter.type']);
    expect(at(derived('token', ['Patient']), 'warning')).toEqual(['SearchParameter.type']);
    expect(at(derived('string', ['Practitioner']), 'warning')).toEqual(['SearchParameter.base[0]']);
  });

  it("a CapabilityStatement's search parameters agree with their definitions", () => {
    const cs = (type: string, resourceType: string) => ({
      resourceType: 'CapabilityStatement',
      status: 'active',
      date: '2020-01-01',
      kind: 'instance',
      fhirVersion: '4.0.1',
      format: ['json'],
      implementation: { description: 'x' },
      rest: [
        {
          mode: 'server',
          resource: [
            {
              type: resourceType,
              searchParam: [
                {
                  name: 'family',
                  type,
                  definition: 'http://example.net/fhir/SearchParameter/patient-family',
                },
              ],
            },
          ],
        },
      ],
    });
    expect(at(cs('string', 'Patient'), 'error')).toEqual([]);
    expect(at(cs('token', 'Patient'), 'error')).toEqual([
      'CapabilityStatement.rest[0].resource[0].searchParam[0].type',
    ]);
    expect(at(cs('string', 'Practitioner'), 'warning')).toEqual([
      'CapabilityStatement.rest[0].resource[0].searchParam[0]',
    ]);
  });

  it("a MeasureReport's groups, populations and stratifiers are those of its Measure", () => {
    const report = (group: object) => ({
      resourceType: 'MeasureReport',
      status: 'complete',
      type: 'summary',
      measure: 'http://example.net/fhir/Measure/m',
      period: { start: '2020-01-01', end: '2020-12-31' },
      group: [group],
    });
    const ok = report({
      code: { text: 'g1' },
      population: [{ code: { coding: [{ system: 'http://x.org/p', code: 'numerator' }] }, count: 1 }],
      stratifier: [{ code: [{ text: 'age' }] }],
    });
    expect(at(ok, 'error')).toEqual([]);
    expect(at(report({ code: { text: 'g9' } }), 'error')).toEqual(['MeasureReport.group[0].code']);
    expect(
      at(
        report({
          code: { text: 'g1' },
          population: [{ code: { coding: [{ system: 'http://x.org/p', code: 'other' }] } }],
        }),
        'error',
      ),
    ).toEqual(['MeasureReport.group[0].population[0].code']);
    // On a write (no crossResourceSeverity) the same finding is a warning.
    expect(at(report({ code: { text: 'g9' } }), 'warning')).toEqual(['MeasureReport.group[0].code']);
  });
});
