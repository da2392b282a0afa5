// Measures the code's shape for issue 13's closing note: every function longer than a limit
// (default 60 lines) and every file longer than 600 lines under src/, longest first.
// Usage: npx tsx scripts/long-functions.ts [limit] [folder]
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';

const functionLimit = Number(process.argv[2] ?? 60);
const root = process.argv[3] ?? 'src';
const fileLimit = 600;

interface Measured {
  name: string;
  file: string;
  lines: number;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

/** The name a reader would search for: `Class.method`, the variable an arrow is bound to, or `<anonymous>`. */
function functionName(node: ts.FunctionLikeDeclaration, file: ts.SourceFile): string {
  const own = node.name && ts.isIdentifier(node.name) ? node.name.text : node.name?.getText(file);
  let parent: ts.Node = node.parent;
  if (own) {
    if (ts.isClassLike(parent) && parent.name) return `${parent.name.text}.${own}`;
    return own;
  }
  if (ts.isConstructorDeclaration(node) && ts.isClassLike(parent) && parent.name) {
    return `${parent.name.text}.constructor`;
  }
  while (ts.isParenthesizedExpression(parent) || ts.isAsExpression(parent)) parent = parent.parent;
  if (
    ts.isVariableDeclaration(parent) ||
    ts.isPropertyAssignment(parent) ||
    ts.isPropertyDeclaration(parent)
  ) {
    return parent.name.getText(file);
  }
  if (ts.isCallExpression(parent)) return `<callback of ${parent.expression.getText(file).slice(0, 40)}>`;
  return '<anonymous>';
}

function lineCount(node: ts.Node, file: ts.SourceFile): number {
  const start = file.getLineAndCharacterOfPosition(node.getStart(file)).line;
  const end = file.getLineAndCharacterOfPosition(node.getEnd()).line;
  return end - start + 1;
}

const longFunctions: Measured[] = [];
const longFiles: Measured[] = [];
for (const path of sourceFiles(root)) {
  const text = readFileSync(path, 'utf8');
  const file = ts.createSourceFile(path, text, ts.ScriptTarget.ES2022, true);
  const name = relative('.', path);
  const fileLines = text.endsWith('\n') ? file.getLineStarts().length - 1 : file.getLineStarts().length;
  if (fileLines > fileLimit) longFiles.push({ name, file: name, lines: fileLines });
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) && 'body' in node && node.body) {
      const lines = lineCount(node, file);
      if (lines > functionLimit) {
        longFunctions.push({
          name: functionName(node as ts.FunctionLikeDeclaration, file),
          file: name,
          lines,
        });
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
}

const byLength = (a: Measured, b: Measured): number => b.lines - a.lines || a.name.localeCompare(b.name);
console.log(`Functions over ${functionLimit} lines in ${root}/ (${longFunctions.length}):`);
for (const f of longFunctions.sort(byLength)) {
  console.log(`${String(f.lines).padStart(5)}  ${f.name.padEnd(48)} ${f.file}`);
}
console.log(`\nFiles over ${fileLimit} lines in ${root}/ (${longFiles.length}):`);
for (const f of longFiles.sort(byLength)) console.log(`${String(f.lines).padStart(5)}  ${f.file}`);
