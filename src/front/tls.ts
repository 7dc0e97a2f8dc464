// HTTPS/WSS: the certificate and key are checked here, at start, so a wrong
// path or a key of another certificate is a clear error naming the file
// (uWS would say only "App construction failed").
import { X509Certificate, createPrivateKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Config } from "../config.js";

export class TlsFilesError extends Error {}

export function checkTlsFiles(config: Config): void {
  if (!config.tls_cert_file) return;
  const read = (what: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new TlsFilesError(`${what} ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? "error"})`);
    }
  };
  const certPem = read("tls_cert_file", config.tls_cert_file);
  const keyPem = read("tls_key_file", config.tls_key_file);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch {
    throw new TlsFilesError(`tls_cert_file ${config.tls_cert_file}: not a PEM certificate`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    throw new TlsFilesError(`tls_key_file ${config.tls_key_file}: not a PEM private key (or it is encrypted)`);
  }
  if (!cert.checkPrivateKey(key)) throw new TlsFilesError(`tls_key_file ${config.tls_key_file} is not the key of the certificate in ${config.tls_cert_file}`);
}
