#version 330
// Shows (part of) a picture texture in the current viewport. Picture textures hold image row 0 at texture
// row 0; the screen's y axis points up, hence the flip. The texture's alpha is passed on (a premultiplied
// mesh layer is blended over the frame; opaque pictures have alpha 1).
uniform sampler2D u_image;
uniform vec4 u_uv_rect;   // texture coordinates of the part shown: x0, y0 (top-left), x1, y1 (bottom-right)
in vec2 v_uv;
layout(location = 0) out vec4 f_color;

void main() {
    vec2 uv = mix(u_uv_rect.xy, u_uv_rect.zw, vec2(v_uv.x, 1.0 - v_uv.y));
    f_color = texture(u_image, uv);
}
