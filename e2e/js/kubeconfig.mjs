// The official JavaScript client with the kubeconfig `watchcache serve --write-kubeconfig`
// wrote (argv[2]): KubeConfig.loadFromFile, then over TLS with its CA and token, a list of
// namespaces, and a watch of ConfigMaps that sees one this script creates. Prints one JSON line
// of what it saw; exits non-zero on any error. Run by tests/auth.rs.
import * as k8s from '@kubernetes/client-node';

// Not a measure of speed: only so that a hung server fails the test instead of hanging it.
setTimeout(() => {
  console.error('no answer within 120 s');
  process.exit(2);
}, 120_000).unref();

const kc = new k8s.KubeConfig();
kc.loadFromFile(process.argv[2]);
const core = kc.makeApiClient(k8s.CoreV1Api);
const namespaces = (await core.listNamespace()).items.map((namespace) => namespace.metadata.name).sort();

const watch = new k8s.Watch(kc);
let controller;
const seen = new Promise((resolve, reject) => {
  watch
    .watch(
      '/api/v1/namespaces/default/configmaps',
      {},
      (type, object) => {
        if (type === 'ADDED' && object.metadata.name === 'from-js') resolve(object);
      },
      (error) => reject(error ?? new Error('the watch ended before the ConfigMap was seen')),
    )
    .then((started) => {
      controller = started;
    }, reject);
});
await core.createNamespacedConfigMap({
  namespace: 'default',
  body: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'from-js' }, data: { key: 'value' } },
});
const watched = await seen;
controller?.abort();
console.log(JSON.stringify({ namespaces, watched: watched.metadata.name, data: watched.data }));
process.exit(0);
