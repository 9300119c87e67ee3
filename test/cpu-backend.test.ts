// The SIMD WebAssembly kernels against the float64 reference (the shared conformance suite).
import { createCpuBackend } from '../src/cpu/backend.ts';
import { kernelConformance } from './helpers/conformance.ts';

kernelConformance('cpu', createCpuBackend);
