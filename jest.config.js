// Two projects: `unit` (pure logic, no processes) and `integration` (real control plane, Redis, worker processes).
// ESM TypeScript through ts-jest; run with `node --experimental-vm-modules` (see package.json scripts).
const tsJest = {
  preset: 'ts-jest/presets/default-esm',
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json', diagnostics: { ignoreCodes: [151002] } }],
  },
  testPathIgnorePatterns: ['/node_modules/', '/dist/', '<rootDir>/.tmp/'],
  // Run folders hold etcd data (whose `member/snap/*.snap` looks like jest snapshots) and logs: keep jest out of them.
  modulePathIgnorePatterns: ['<rootDir>/.tmp/', '<rootDir>/worker/native/build'],
};

export default {
  projects: [
    {
      ...tsJest,
      displayName: 'unit',
      testMatch: ['<rootDir>/**/*.test.ts'],
      testPathIgnorePatterns: [...tsJest.testPathIgnorePatterns, '\\.(int|e2e)\\.test\\.ts$'],
    },
    { ...tsJest, displayName: 'integration', testMatch: ['<rootDir>/**/*.int.test.ts'], slowTestThreshold: 60 },
    { ...tsJest, displayName: 'e2e', testMatch: ['<rootDir>/**/*.e2e.test.ts'], slowTestThreshold: 120 },
  ],
};
