#version 330
// Mesh vertex shader. Two vertex layouts feed it: indexed (N vertices, the fast path) and "expanded"
// (3 vertices per triangle, drawn non-indexed) when the wireframe or the triangle ids need a per-corner
// barycentric coordinate; there gl_VertexID % 3 is the corner.
// Spaces: "camera" = OpenCV camera space of the input (x right, y down, z forward, mm); "view" = the space the
// picture is taken in (u_view maps camera -> view; identity for the camera's own view, an orbit otherwise).

in vec3 in_pos;               // camera space, mm
in vec3 in_normal;            // camera space, unit, outward
in vec3 in_color;             // per-vertex albedo (used when u_has_colors)
in float in_scalar;           // per-vertex heatmap value
in vec3 in_hidden_edges;      // expanded path: 1 for each edge of this triangle the wireframe leaves out
                              // (edge k is opposite corner k), e.g. the diagonals of a quad mesh

uniform mat4 u_view;          // camera -> view (rigid)
uniform mat4 u_proj;          // view -> clip, built from the intrinsics (see realtime/render.py)
uniform bool u_has_colors;
uniform vec3 u_albedo;
uniform vec3 u_sh[9];         // SH irradiance coefficients (RGB) over the view-space normal, OpenCV axes
uniform float u_specular;     // strength of a Blinn-Phong highlight from the key light (0 = pure SH)
uniform vec3 u_key_light;     // direction toward the key light, view space, unit

out vec3 v_bary;
out vec3 v_hidden_edges;
out vec3 v_cam;               // camera-space position (projective texturing from the input camera)
out vec3 v_pos;               // view-space position
out vec3 v_normal;            // view-space normal
out vec3 v_albedo;
out float v_scalar;
out vec3 v_shade;             // SH irradiance at the vertex
out vec3 v_highlight;         // specular highlight at the vertex
out vec3 v_lit;               // the "lit" colour: v_albedo * v_shade + v_highlight (one varying instead of
                              // three for the fragment shader to interpolate: the rasteriser's main cost)

// Lighting is evaluated per vertex (Gouraud): the face meshes have triangles of a few pixels on screen, so
// it looks the same as per-pixel lighting, and software rasterisers (llvmpipe) shade far fewer points.
vec3 sh_shade(vec3 n) {
    // Real spherical harmonics up to band 2 with their normalisation constants; the coefficients already
    // include the Lambertian convolution (irradiance), as in the 3DMM fitting literature.
    vec3 e = u_sh[0] * 0.282095
           + u_sh[1] * (0.488603 * n.y) + u_sh[2] * (0.488603 * n.z) + u_sh[3] * (0.488603 * n.x)
           + u_sh[4] * (1.092548 * n.x * n.y) + u_sh[5] * (1.092548 * n.y * n.z)
           + u_sh[6] * (0.315392 * (3.0 * n.z * n.z - 1.0)) + u_sh[7] * (1.092548 * n.x * n.z)
           + u_sh[8] * (0.546274 * (n.x * n.x - n.y * n.y));
    return max(e, vec3(0.0));
}

void main() {
    int corner = gl_VertexID % 3;
    vec4 pv = u_view * vec4(in_pos, 1.0);
    v_bary = vec3(corner == 0, corner == 1, corner == 2);
    v_hidden_edges = in_hidden_edges;
    v_cam = in_pos;
    v_pos = pv.xyz;
    v_normal = mat3(u_view) * in_normal;
    v_albedo = u_has_colors ? in_color : u_albedo;
    v_scalar = in_scalar;
    vec3 n = normalize(v_normal);
    v_shade = sh_shade(n);
    v_highlight = vec3(0.0);
    if (u_specular > 0.0) {
        vec3 h = normalize(u_key_light - normalize(v_pos));
        v_highlight = vec3(u_specular * pow(max(dot(n, h), 0.0), 40.0));
    }
    v_lit = v_albedo * v_shade + v_highlight;
    gl_Position = u_proj * pv;
}
