// One-key labelling: a key clicks the button marked data-key="<key>" (plain forms otherwise).
document.addEventListener("keydown", function (event) {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  var target = event.target;
  var tag = target && target.tagName ? target.tagName.toLowerCase() : "";
  if (tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable) return;
  var key = event.key.toLowerCase();
  if (!/^[a-z0-9]$/.test(key)) return;
  var button = document.querySelector('[data-key="' + key + '"]');
  if (!button || button.disabled) return;
  event.preventDefault();
  button.click();
});
