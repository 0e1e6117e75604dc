import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface Pki {
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  adminCert: string;
  adminKey: string;
  saKey: string;
  saPub: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * A throw-away PKI for one control plane, made with the openssl CLI: a CA, the API server's serving certificate (SANs
 * for loopback and the in-cluster names), an admin client certificate in group system:masters, and an EC key pair for
 * service-account tokens. EC P-256 keys keep this under a second.
 */
export function makePki(dir: string): Pki {
  fs.mkdirSync(dir, { recursive: true });
  const p = (f: string) => path.join(dir, f);
  const ecKey = (f: string) => openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', f], dir);

  ecKey('ca.key');
  openssl(
    ['req', '-x509', '-new', '-key', 'ca.key', '-subj', '/CN=modelserve-test-ca', '-days', '3650', '-out', 'ca.crt'],
    dir,
  );

  fs.writeFileSync(
    p('server.ext'),
    [
      'basicConstraints=CA:FALSE',
      'keyUsage=digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,' +
        'DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local',
    ].join('\n'),
  );
  ecKey('server.key');
  openssl(['req', '-new', '-key', 'server.key', '-subj', '/CN=kube-apiserver', '-out', 'server.csr'], dir);
  openssl(
    [
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '3650',
      '-extfile',
      'server.ext',
      '-out',
      'server.crt',
    ],
    dir,
  );

  fs.writeFileSync(
    p('client.ext'),
    'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n',
  );
  ecKey('admin.key');
  openssl(
    ['req', '-new', '-key', 'admin.key', '-subj', '/O=system:masters/CN=modelserve-admin', '-out', 'admin.csr'],
    dir,
  );
  openssl(
    [
      'x509',
      '-req',
      '-in',
      'admin.csr',
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '3650',
      '-extfile',
      'client.ext',
      '-out',
      'admin.crt',
    ],
    dir,
  );

  ecKey('sa.key');
  openssl(['ec', '-in', 'sa.key', '-pubout', '-out', 'sa.pub'], dir);

  return {
    caCert: p('ca.crt'),
    caKey: p('ca.key'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    adminCert: p('admin.crt'),
    adminKey: p('admin.key'),
    saKey: p('sa.key'),
    saPub: p('sa.pub'),
  };
}

/** A kubeconfig with certificates embedded, usable by the TypeScript client, kubectl, kcm, the scheduler, kwok and helm. */
export function writeKubeconfig(
  file: string,
  server: string,
  caCert: string,
  clientCert: string,
  clientKey: string,
  user = 'admin',
): void {
  const b64 = (f: string) => fs.readFileSync(f).toString('base64');
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'modelserve-test', cluster: { server, 'certificate-authority-data': b64(caCert) } }],
    users: [{ name: user, user: { 'client-certificate-data': b64(clientCert), 'client-key-data': b64(clientKey) } }],
    contexts: [{ name: 'modelserve-test', context: { cluster: 'modelserve-test', user, namespace: 'default' } }],
    'current-context': 'modelserve-test',
  };
  fs.writeFileSync(file, JSON.stringify(doc, null, 2), { mode: 0o600 });
}
