/**
 * Official R4 examples (hl7.fhir.r4.examples@4.0.1) that break R4's own rules, each with what is wrong in it.
 * The full validator refuses them, so the service does not store them; the tests check that each one still fails
 * (so the list stays honest) and that no other example does.
 */
export const KNOWN_BAD_EXAMPLES: Record<string, string> = {
  'ActivityDefinition-blood-tubes-supply.json': 'txt-2: the narrative div is only whitespace',
  'ActivityDefinition-heart-valve-replacement.json': 'txt-2: the narrative div is only whitespace',
  'EventDefinition-example.json': 'txt-2: the narrative div is only whitespace',
  'Questionnaire-zika-virus-exposure-assessment.json': 'txt-2: the narrative div is only whitespace',
  'Basic-referral.json':
    'modifierExtension with URLs that have no definition (they cannot be processed safely)',
  'Bundle-10bb101f-a121-4264-a920-67be9cb82c74.json': "fullUrl .../Patient/pat12 holds Patient 'pat2'",
  'Bundle-3a0707d3-549e-4467-b8b8-5a2ab3800efe.json': "fullUrl .../Patient/pat12 holds Patient 'pat2'",
  'Bundle-lri-example.json': "fullUrls .../Observation/lri-X hold Observations with id 'X'",
  'Bundle-valueset-expansions.json': "a valueUri 'urn:oid:...|4.0.1' is not a valid OID",
  'DeviceMetric-example.json': 'DeviceMetric.parent refers to a DeviceDefinition (only Device allowed)',
  'DeviceUseStatement-example.json': 'reasonReference refers to a Procedure (not an allowed target)',
  'Library-zika-virus-intervention-logic.json': "valueSet 'urn:oid:X.Y.Z' is not a valid OID",
  'MedicationRequest-medrx0301.json':
    'dispenseRequest.performer refers to a Practitioner (only Organization allowed)',
  'NutritionOrder-enteralcontinuous.json':
    "SNOMED CT code '6547210000124112' fails its Verhoeff check digit, so it is no concept id (snomedct.html)",
  'Observation-clinical-gender.json': 'performer refers to an Encounter (not an allowed target)',
  'Questionnaire-bb.json': "que-7: enableWhen with operator 'exists' has a non-boolean answer",
  'Questionnaire-qs1.json': 'nested items have no linkId (required)',
  'Bundle-dataelements.json': "two entries share the fullUrl '.../StructureDefinition/de-Quantity.value'",
  'Bundle-v2-valuesets.json': 'ext-1: a v2 CodeSystem concept extension with neither a value nor extensions',
  'Observation-f202.json':
    'a body temperature (LOINC 8310-5) without effective[x], which the R4 vital signs profile requires',
  'Bundle-types.json':
    'the regex extension on ElementDefinition.type, outside the contexts R4 declares for it (Questionnaire.item, ElementDefinition)',
  'Bundle-valuesets.json':
    'valueset-concept-comments on a CodeSystem.concept, outside the context R4 declares for it (ValueSet.compose.include.concept)',
  'ImplementationGuide-fhir.json': 'ImplementationGuide.name and .status are required (1..1) and missing',
};
