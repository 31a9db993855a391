#version 330
// Triangle index, barycentric coordinates and view depth of the visible surface (no anti-aliasing).
in vec3 v_bary;
in vec3 v_hidden_edges;
in vec3 v_cam;
in vec3 v_pos;
in vec3 v_normal;
in vec3 v_albedo;
in float v_scalar;

layout(location = 0) out vec4 f_ids;   // (b0, b1, view z in mm, triangle index + 1); cleared to 0 = empty

void main() {
    // gl_PrimitiveID counts triangles of the non-indexed draw, i.e. the input triangle index. Float holds
    // integers exactly up to 2^24, far above any face mesh.
    f_ids = vec4(v_bary.x, v_bary.y, v_pos.z, float(gl_PrimitiveID + 1));
}
