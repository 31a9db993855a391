#version 330
// Landmark dots given in pixels (OpenCV convention: pixel centres at integer coordinates).
in vec2 in_px;
uniform vec2 u_size;          // target width, height
uniform float u_point_size;   // diameter in pixels

void main() {
    gl_Position = vec4(2.0 * (in_px + 0.5) / u_size - 1.0, 0.0, 1.0);
    gl_PointSize = u_point_size;
}
