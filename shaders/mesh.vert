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

out vec3 v_bary;
out vec3 v_hidden_edges;
out vec3 v_cam;               // camera-space position (projective texturing from the input camera)
out vec3 v_pos;               // view-space position
out vec3 v_normal;            // view-space normal
out vec3 v_albedo;
out float v_scalar;

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
    gl_Position = u_proj * pv;
}
