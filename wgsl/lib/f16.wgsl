// IEEE half values from u32 bits without the shader-f16 extension (unpack2x16float is core WGSL).

// The half in the low 16 bits of `bits`.
fn halfLo(bits: u32) -> f32 { return unpack2x16float(bits).x; }

// Four halves from two words (lo word first, each word low half first).
fn halves4(lo: u32, hi: u32) -> vec4<f32> { return vec4<f32>(unpack2x16float(lo), unpack2x16float(hi)); }
