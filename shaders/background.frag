#version 330
// Copies the background image 1:1 into the target (row 0 of the image = window row 0).
uniform sampler2D u_background;
in vec2 v_uv;
layout(location = 0) out vec4 f_color;

void main() {
    f_color = vec4(texelFetch(u_background, ivec2(gl_FragCoord.xy), 0).rgb, 1.0);
}
