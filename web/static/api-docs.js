// Renders /api/openapi.json as a readable reference: operations by tag, parameters, bodies, responses.
(function () {
  "use strict";
  var root = document.getElementById("api-reference");
  if (!root) { return; }

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text) { node.textContent = text; }
    if (cls) { node.className = cls; }
    return node;
  }

  function resolve(spec, schema) {
    if (schema && schema.$ref) { return spec.components.schemas[schema.$ref.split("/").pop()] || {}; }
    return schema || {};
  }

  function describeSchema(spec, schema, depth) {
    schema = resolve(spec, schema);
    if (schema.type === "array") { return "[" + describeSchema(spec, schema.items, depth) + "]"; }
    if (!schema.properties || depth > 2) { return schema.type || "object"; }
    var lines = Object.keys(schema.properties).map(function (name) {
      var prop = schema.properties[name];
      var required = (schema.required || []).indexOf(name) >= 0 ? " (required)" : "";
      var extra = prop.enum ? " one of " + prop.enum.join(", ") : "";
      var ref = prop.$ref || (prop.items && prop.items.$ref) ? " " + describeSchema(spec, prop, depth + 1) : "";
      return "  ".repeat(depth + 1) + name + ": " + (prop.type || "") + required + extra + ref + (prop.description ? "  — " + prop.description : "");
    });
    return "{\n" + lines.join("\n") + "\n" + "  ".repeat(depth) + "}";
  }

  function render(spec) {
    root.innerHTML = "";
    root.appendChild(el("p", spec.info.description || ""));
    Object.keys(spec.paths).forEach(function (path) {
      Object.keys(spec.paths[path]).forEach(function (method) {
        var op = spec.paths[path][method];
        var card = el("section", null, "card");
        var head = el("h3");
        head.appendChild(el("code", method.toUpperCase() + " " + path));
        head.appendChild(document.createTextNode(" " + (op.summary || "")));
        card.appendChild(head);
        if (op.description) { card.appendChild(el("p", op.description, "muted")); }
        (op.parameters || []).forEach(function (p) {
          card.appendChild(el("div", p["in"] + " parameter " + p.name + (p.required ? " (required)" : "") + ": " + ((p.schema || {}).type || ""), "mono"));
        });
        if (op.requestBody) {
          card.appendChild(el("strong", "Body"));
          card.appendChild(el("pre", describeSchema(spec, op.requestBody.content["application/json"].schema, 0)));
        }
        Object.keys(op.responses).forEach(function (code) {
          var response = op.responses[code];
          var content = response.content && response.content["application/json"];
          card.appendChild(el("div", code + " " + response.description, "mono"));
          if (content && code < 300) { card.appendChild(el("pre", describeSchema(spec, content.schema, 0))); }
        });
        root.appendChild(card);
      });
    });
  }

  fetch(root.getAttribute("data-spec")).then(function (r) { return r.json(); }).then(render).catch(function (error) {
    root.textContent = "Could not load the API document: " + error;
  });
})();
