#version 330
// Mesh fragment shader. realtime/render.py compiles one variant per display mode with
//   #define MODE <0..5>   #define WIREFRAME <0|1>   #define BACKGROUND <0|1|2>
// inserted after the #version line: llvmpipe executes both sides of a branch under a mask, so a runtime
// switch would pay for every mode's texture lookups on every fragment.
// BACKGROUND 0 and 1: the output is opaque; "under" (the clear colour, or the background texture's pixel)
// is mixed in here rather than blended, so the wireframe's hidden-line removal and the mesh opacity need
// one depth-tested pass. BACKGROUND 2: the same layers with nothing under them, as premultiplied RGBA
// (alpha = coverage x opacity): the caller composites it over its own picture (out = under * (1 - a) + rgb),
// which gives exactly the BACKGROUND 1 mix without uploading the background.

#define MODE_LIT 0
#define MODE_WIREFRAME 1
#define MODE_TEXTURED 2
#define MODE_NORMALS 3
#define MODE_DEPTH 4
#define MODE_HEATMAP 5

in vec3 v_bary;
in vec3 v_hidden_edges;
in vec3 v_cam;
in vec3 v_pos;
in vec3 v_normal;
in vec3 v_albedo;
in float v_scalar;
in vec3 v_shade;
in vec3 v_highlight;
in vec3 v_lit;

uniform vec4 u_wire_color;        // rgb + opacity of the lines
uniform float u_wire_width;       // line half-width in pixels
uniform sampler2D u_texture;      // "textured": image seen by the texture camera
uniform vec4 u_tex_k;             // fx, fy, cx, cy of the texture camera
uniform vec2 u_tex_size;          // its width, height in pixels
uniform sampler2D u_background;   // same size as the target; row 0 = image top row = window y 0
uniform vec3 u_clear_color;
uniform float u_opacity;          // mesh over "under"
uniform sampler2D u_colormap;     // 256 x 1 lookup table
uniform vec2 u_scalar_range;      // heatmap lo, hi
uniform vec2 u_depth_range;       // depth view: near (bright), far (dark) in mm

layout(location = 0) out vec4 f_color;

void main() {
#if BACKGROUND == 1
    vec3 under = texelFetch(u_background, ivec2(gl_FragCoord.xy), 0).rgb;
#elif BACKGROUND == 0
    vec3 under = u_clear_color;
#else
    vec3 under = vec3(0.0);           // (the wireframe mode's base colour; its layer is transparent)
#endif

#if MODE == MODE_LIT
    // (Lighting comes from the vertex shader; see there.)
    vec3 color = v_lit;
#elif MODE == MODE_WIREFRAME
    vec3 color = under;
#elif MODE == MODE_TEXTURED
    // Exact per-fragment projection into the texture camera (v_cam is affine on the surface, so its
    // perspective-correct interpolation is exact); texel centres sit at integer pixel coordinates.
    vec2 px = u_tex_k.xy * v_cam.xy / v_cam.z + u_tex_k.zw;
    vec3 color = texture(u_texture, (px + 0.5) / u_tex_size).rgb;
    // Surfaces that face away from the texture camera received no texture: darken them.
    float facing = clamp(-dot(normalize(v_normal), normalize(v_cam)) * 4.0, 0.0, 1.0);
    color *= mix(0.35, 1.0, facing);
#elif MODE == MODE_NORMALS
    // Shown in the usual OpenGL colouring (x right, y up, z toward the viewer). Back faces are culled, so
    // the outward normal faces the viewer.
    vec3 color = normalize(v_normal) * vec3(0.5, -0.5, -0.5) + 0.5;
#elif MODE == MODE_DEPTH
    float t = clamp((v_pos.z - u_depth_range.x) / max(u_depth_range.y - u_depth_range.x, 1e-6), 0.0, 1.0);
    vec3 color = vec3(1.0 - 0.85 * t);
#else
    float t = clamp((v_scalar - u_scalar_range.x) / max(u_scalar_range.y - u_scalar_range.x, 1e-12), 0.0, 1.0);
    vec3 cmap = texture(u_colormap, vec2(t, 0.5)).rgb;
    // Keep the shape readable: modulate by a soft, mostly ambient shading.
    float lum = dot(v_shade, vec3(0.299, 0.587, 0.114));
    vec3 color = cmap * (0.45 + 0.6 * lum);
#endif

#if BACKGROUND == 2
    // Premultiplied layers over nothing: the mesh at u_opacity, then the lines.
#if MODE == MODE_WIREFRAME
    vec4 layer = vec4(0.0);
#else
    vec4 layer = vec4(clamp(color, 0.0, 1.0), 1.0) * u_opacity;
#endif
#if WIREFRAME || MODE == MODE_WIREFRAME
    vec3 d = v_bary / max(fwidth(v_bary), vec3(1e-6)) + v_hidden_edges * 1e4;
    float edge = min(d.x, min(d.y, d.z));
    float a = (1.0 - smoothstep(u_wire_width - 0.5, u_wire_width + 0.5, edge)) * u_wire_color.a;
    layer = layer * (1.0 - a) + vec4(u_wire_color.rgb, 1.0) * a;
#endif
    f_color = layer;
#else
#if MODE != MODE_WIREFRAME
    color = mix(under, color, u_opacity);
#endif
#if WIREFRAME || MODE == MODE_WIREFRAME
    // Distance to each edge in pixels; hidden edges are pushed far away.
    vec3 d = v_bary / max(fwidth(v_bary), vec3(1e-6)) + v_hidden_edges * 1e4;
    float edge = min(d.x, min(d.y, d.z));
    float a = (1.0 - smoothstep(u_wire_width - 0.5, u_wire_width + 0.5, edge)) * u_wire_color.a;
    color = mix(color, u_wire_color.rgb, a);
#endif
    f_color = vec4(clamp(color, 0.0, 1.0), 1.0);
#endif
}
