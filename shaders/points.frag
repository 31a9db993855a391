#version 330
// Round, anti-aliased dots.
uniform vec4 u_point_color;
uniform float u_point_size;
layout(location = 0) out vec4 f_color;

void main() {
    float r = length(gl_PointCoord - 0.5) * u_point_size;   // pixels from the centre
    float a = (1.0 - smoothstep(0.5 * u_point_size - 1.0, 0.5 * u_point_size, r)) * u_point_color.a;
    if (a <= 0.0) {
        discard;
    }
    f_color = vec4(u_point_color.rgb, a);
}
